"""How a network is run: :class:`RunOptions`, one validated object from the caller to the convolution.

``run``, ``upscale``, ``upscale_array``, ``upscale_files``, ``evaluate`` and ``make_report`` take
``options=RunOptions(...)``; ``run(net, x, tile=64)`` and the like still work for Python users and
build a ``RunOptions`` at the boundary. The command line builds one from its arguments in
``sisr.cli.arguments.run_options``. Checks that need the network and its device (a precision the
model does not declare, fp16 on the CPU, a backend that cannot run) are made by the ``Runner``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

DEFAULT_TILE_OVERLAP = 32  # LR pixels between neighbouring tiles
CHOP_SHAVE = 10  # EDSR-PyTorch / RCAN / CSNLN forward_chop defaults
CHOP_MIN_SIZE = 160_000
PRECISION_NAMES = ("fp32", "bf16", "fp16")
ALPHA_MODES = ("bicubic", "model")
# The fields that change an output's pixels (recorded in each output's provenance); the others (backend,
# channels_last, progress) choose how the same function is computed.
PIXEL_FIELDS = ("tile", "tile_overlap", "chop", "chop_shave", "chop_min_size", "chop_round_to_scale",
                "self_ensemble", "precision", "alpha")


@dataclass(frozen=True)
class RunOptions:
    """Inference options, checked once when made (``ConfigError`` with one line naming the option).

    * ``tile``: ``None`` (whole image), a tile size in LR pixels (>= 2 ``tile_overlap``) or ``"auto"``;
      ``tile_overlap`` in LR pixels (default 32).
    * ``chop`` (the authors' ``forward_chop``; not with ``tile``), ``chop_shave``, ``chop_min_size``,
      ``chop_round_to_scale``.
    * ``self_ensemble``: the mean of the 8 flips/transposes.
    * ``precision``: ``fp32``, ``bf16``, ``fp16`` (autocast; only what the model declares).
    * ``backend``: ``auto``, ``eager``, ``compile``, ``onnxruntime`` (see ``backends.py``).
    * ``channels_last``: run in channels_last memory format; a module in another layout is converted
      once, in place, on its first run (``resolve`` already loads CPU networks in channels_last).
    * ``alpha``: ``bicubic`` or ``model`` (how an alpha plane is upscaled; images only).
    * ``progress``: a progress bar over tiles.
    """

    tile: int | str | None = None
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    chop: bool = False
    chop_shave: int = CHOP_SHAVE
    chop_min_size: int = CHOP_MIN_SIZE
    chop_round_to_scale: bool = False
    self_ensemble: bool = False
    precision: str = "fp32"
    backend: str = "auto"
    channels_last: bool = False
    alpha: str = "bicubic"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.tile_overlap is None:
            object.__setattr__(self, "tile_overlap", DEFAULT_TILE_OVERLAP)
        for name in ("chop", "chop_round_to_scale", "self_ensemble", "channels_last", "progress"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        _check_int("--tile-overlap", self.tile_overlap, 0)
        _check_int("--chop-shave", self.chop_shave, 1)  # 0: odd sizes leave a gap, 1-pixel halves are empty
        _check_int("--chop-min-size", self.chop_min_size, 1)
        self._check_tile()
        from .backends import BACKENDS

        for value, allowed, what in ((self.precision, PRECISION_NAMES, "precision"),
                                     (self.backend, BACKENDS, "backend"), (self.alpha, ALPHA_MODES, "alpha")):
            if value not in allowed:
                raise ConfigError(f"unknown {what} '{value}'; use {', '.join(allowed)}"
                                  if what != "alpha" else f"alpha must be one of {', '.join(allowed)}, got '{value}'")

    def _check_tile(self) -> None:
        tile = self.tile
        if tile is None or tile == "auto":
            pass
        elif isinstance(tile, bool) or not isinstance(tile, int):
            raise ConfigError(f"--tile must be a number of LR pixels or 'auto', got {tile!r}")
        elif tile < max(1, 2 * self.tile_overlap):
            raise ConfigError(f"--tile {tile} must be at least twice the tile overlap ({self.tile_overlap}; "
                              f"see --tile-overlap) and >= 1")
        if tile is not None and self.chop:
            raise ConfigError("choose --tile or --chop, not both")

    @classmethod
    def build(cls, options: "RunOptions | None" = None, **keywords: Any) -> "RunOptions":
        """``options`` with ``keywords`` applied (both optional): the boundary where keyword calls such as
        ``run(net, x, tile=64)`` become one object. An unknown keyword is a ``ConfigError``."""
        if options is not None and not isinstance(options, RunOptions):
            raise ConfigError(f"options must be a RunOptions, got {type(options).__name__}")
        unknown = sorted(set(keywords) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            hint = " (compile=True is now backend='compile')" if "compile" in unknown else ""
            raise ConfigError(f"unknown inference option {', '.join(map(repr, unknown))}{hint}; "
                              f"options: {', '.join(f.name for f in dataclasses.fields(cls))}")
        if options is None:
            return cls(**keywords)
        return dataclasses.replace(options, **keywords) if keywords else options

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def pixel_options(self) -> dict[str, Any]:
        """The fields that change the output's pixels, by name (what an output's provenance records)."""
        return {name: getattr(self, name) for name in PIXEL_FIELDS}

    @property
    def load_channels_last(self) -> bool | None:
        """The memory layout to load a network in for these options (``resolve(channels_last=...)``): True
        with ``channels_last``; False for ``eager`` (the module as it is: NCHW when loaded) and for the
        compiled/exported backends; None (the loader's choice: channels_last on the CPU) for ``auto``."""
        if self.channels_last:
            return True
        return None if self.backend == "auto" else False


def _check_int(flag: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum} (a whole number), got {value!r}")
