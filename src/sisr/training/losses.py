"""Training losses by name (``train.loss``): one registry, extended with :func:`register_loss`.

A loss is ``fn(sr, hr) -> scalar tensor``: the mean over the batch of a per-pixel penalty, computed
in fp32 (the trainer passes ``sr.float()``). Shipped: ``l1`` (every recipe: the papers' loss),
``mse``, ``charbonnier`` (``sqrt((sr - hr)^2 + eps^2)``, eps = 1e-3 on [0, 1] images, LapSRN's form).

    from sisr.training.losses import register_loss
    register_loss("l1-sum", lambda sr, hr: (sr - hr).abs().sum())   # then train.loss=l1-sum

Register before the config is loaded: ``train.loss`` is checked against this registry.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CHARBONNIER_EPS = 1e-3

_LOSSES: dict[str, Loss] = {}


def register_loss(name: str, fn: Loss | None = None, *, replace: bool = False):
    """Add a loss under ``name`` (usable as a decorator); an existing name needs ``replace=True``."""
    def add(f: Loss) -> Loss:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"loss name must be a non-empty string, got {name!r}")
        if name in _LOSSES and not replace:
            raise ConfigError(f"loss '{name}' is already registered (replace=True replaces it)")
        _LOSSES[name] = f
        return f
    return add(fn) if fn is not None else add


def get_loss(name: str) -> Loss:
    """The loss registered as ``name``; a ``ConfigError`` naming the registered ones otherwise."""
    try:
        return _LOSSES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {name!r}; registered: {', '.join(list_losses())}") from None


def list_losses() -> list[str]:
    return sorted(_LOSSES)


# looked up at call time (F.l1_loss, not a reference taken at import), so a patched torch function is used
@register_loss("l1")
def l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)


@register_loss("mse")
def mse(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(sr, hr)


@register_loss("charbonnier")
def charbonnier(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((sr - hr).square() + CHARBONNIER_EPS ** 2).mean()
