"""The models a server offers (:class:`Catalogue`), the networks it keeps loaded (:class:`ModelCache`, an LRU
keyed by model, scale and weights file), and a per-job view of a shared network that reports its progress and
stops it when the job is cancelled (:func:`watched`).

Clients name models by id only (``defian-s``, ``bicubic``, or the stem of a weights file the server was started
with), never by a path on the server.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import nn

from ..errors import ConfigError, ModelError
from ..models import get_info, has_parameters, model_infos
from ..models.registry import is_model_name
from ..utils.fs import slug
from ..weights.handle import LoadedModel
from ..weights.loading import default_model, resolve
from ..weights.pretrained import pretrained_path

__all__ = ["Offer", "Catalogue", "ModelCache", "watched", "NetworkWatch"]


@dataclass(frozen=True)
class Offer:
    """One model clients may ask for: ``id`` (what they name), its registry ``model``, the ``scales`` it runs
    at, what its weights are (``weights``: a file name, ``shipped weights`` or ``no parameters``) and, for the
    server only, the ``source`` given to :func:`sisr.weights.resolve`."""

    id: str
    model: str
    scales: tuple[int, ...]
    weights: str
    precisions: tuple[str, ...]
    source: str

    def public(self) -> dict:
        return {"id": self.id, "model": self.model, "scales": list(self.scales), "weights": self.weights,
                "precisions": list(self.precisions)}


class Catalogue:
    """The offered models by id, and the default one."""

    def __init__(self, offers: list[Offer]):
        self.offers = {o.id: o for o in offers}
        self.default = offers[0].id

    @classmethod
    def build(cls, sources: tuple[str, ...] = (), device: str = "auto") -> "Catalogue":
        """Offers for registry names and weights files (``sources``; a file is loaded once here, to learn and
        check what it holds), or every registry model that runs without a user's weights."""
        if not sources:
            offers = [o for o in map(_registry_offer, (i.name for i in model_infos())) if o is not None]
            first = default_model(2)[0]
            return cls(sorted(offers, key=lambda o: o.id != first))
        offers: list[Offer] = []
        for source in sources:
            offer = _registry_offer(source, required=True) if is_model_name(source) else _file_offer(source, device)
            if offer.id in {o.id for o in offers}:
                raise ConfigError(f"--model {source}: offered twice (id '{offer.id}')")
            offers.append(offer)
        return cls(offers)

    def public(self) -> list[dict]:
        return [o.public() for o in self.offers.values()]

    def choose(self, model_id: str | None, scale: int | None) -> tuple[Offer, int]:
        """The offer and scale a request asks for (defaults: the default model, its first scale)."""
        offer = self.offers.get(model_id or self.default)
        if offer is None:
            raise ModelError(f"model: '{model_id}' is not offered here; models: {', '.join(self.offers)}")
        scale = offer.scales[0] if scale is None else scale
        if scale not in offer.scales:
            raise ModelError(f"scale: {offer.id} runs at x{', x'.join(map(str, offer.scales))} here, not x{scale}")
        return offer, scale


def _registry_offer(name: str, required: bool = False) -> Offer | None:
    info = get_info(name)
    if not has_parameters(info.name):
        scales, weights = tuple(info.scales), "no parameters"
    else:
        scales, weights = tuple(s for s in info.scales if pretrained_path(info.name, s)), "shipped weights"
    if not scales:
        if required:
            raise ConfigError(f"--model {name}: no shipped weights; give a weights file instead (--model FILE)")
        return None
    return Offer(info.name, info.name, scales, weights, tuple(info.capabilities.precisions), info.name)


def _file_offer(source: str, device: str) -> Offer:
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"--model {source}: neither a model name nor a weights file")
    loaded = resolve(path, device=device)
    if loaded.scale is None or loaded.info is None:
        raise ConfigError(f"--model {source}: not a network sisr can name")
    return Offer(slug(path.stem), loaded.name, (loaded.scale,), path.name, tuple(loaded.info.capabilities.precisions),
                 str(path.resolve()))


class ModelCache:
    """Loaded networks, the ``capacity`` most recently used, keyed by (model, scale, weights source).

    A network is loaded once however many requests ask for it at the same time (one lock per key); an evicted
    network stays alive for the jobs still holding it.
    """

    def __init__(self, device: str = "auto", capacity: int = 3):
        self.device, self.capacity = device, capacity
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, offer: Offer, scale: int) -> LoadedModel:
        key = (offer.model, scale, offer.source)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            source = offer.source if offer.weights in ("shipped weights", "no parameters") else Path(offer.source)
            loaded = resolve(source, scale, device=self.device)
            _install_steps(loaded.module)
            with self._lock:
                self._models[key] = loaded
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                self._loading.pop(key, None)
        return loaded

    def loaded(self) -> list[str]:
        with self._lock:
            return [f"{name} x{scale}" for name, scale, _ in self._models]


# --------------------------------------------------------------------------- progress and cancel


class NetworkWatch(Protocol):
    """What a job gives :func:`watched`: told of each call of the network and each of its layers; raising
    from ``network_step`` stops the network (cancel)."""

    def network_call(self, finished: bool) -> None: ...

    def network_step(self) -> None: ...


_CURRENT = threading.local()  # the watch of the job whose network runs in this thread


def _step(module: nn.Module, args) -> None:
    watch = getattr(_CURRENT, "watch", None)
    if watch is not None:
        watch.network_step()


def _install_steps(module: nn.Module) -> None:
    """A pre-hook on every layer of a cached network: counts steps for the job running it in this thread."""
    for sub in module.modules():
        if sub is not module:
            sub.register_forward_pre_hook(_step)


class _Watched(nn.Module):
    """A shared network seen by one job: the same parameters and outputs; calls and layers reported."""

    def __init__(self, net: nn.Module, watch: NetworkWatch):
        super().__init__()
        self.net = net
        self.watch = watch
        self.sisr_spec = getattr(net, "sisr_spec", None)  # what inference reads to name the network
        if hasattr(net, "sisr_weights"):
            self.sisr_weights = net.sisr_weights

    def forward(self, x):
        outer = getattr(_CURRENT, "watch", None)
        _CURRENT.watch = self.watch
        try:
            self.watch.network_call(False)
            y = self.net(x)
            self.watch.network_call(True)
            return y
        finally:
            _CURRENT.watch = outer


def watched(loaded: LoadedModel, watch: NetworkWatch) -> LoadedModel:
    """``loaded`` as one job sees it: the same network, spec and weights record; its progress goes to ``watch``."""
    return dataclasses.replace(loaded, module=_Watched(loaded.module, watch))
