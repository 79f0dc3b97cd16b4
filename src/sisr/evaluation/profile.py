"""Complexity table: parameters, FLOPs / MACs, peak memory and runtime per registry model.

What is measured, and how:

* **Parameters**: :func:`sisr.models.registry.count_parameters` (frozen ones included).
* **FLOPs** with :class:`torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device: the network
  is built there (no weights are allocated or initialised) and run on a ``meta`` input, so shapes
  propagate and every operator is counted without any arithmetic; an input of any size costs the
  same. The counter sees convolutions (transposed and functional ones too), matrix products
  (``mm``/``bmm``/``addmm``/``baddbmm``) and fused attention; element-wise operations, pooling,
  softmax, normalisation and bias additions are not counted. **MACs = FLOPs / 2** (the counter
  counts 2 FLOPs per multiply-accumulate). ``aten._scaled_dot_product_flash_attention_for_cpu``,
  the CPU fused attention kernel, is missing from PyTorch's formula table; it is added here with
  PyTorch's own attention formula so that counting on a real CPU tensor agrees with ``meta``. If
  a network cannot run on ``meta`` the count falls back to a real input on the CPU (or the
  profiling device); the row says which (``flop_counting``).
* **Mult-Adds for a 1280x720 output** (the community convention): MACs for an input of
  ``round(720 / s) x round(1280 / s)`` (H x W, rounded to the nearest integer, halves up), so the
  output is ``s`` times that: exactly 1280x720 for s = 2, 4, 8; 1281x720 for s = 3 (427x240 input).
* **Peak memory**: CUDA: ``torch.cuda.max_memory_allocated()`` during the first forward minus
  the allocation before it (model and input), i.e. activations and workspaces. CPU (Linux): growth
  of the resident set size during the first forward: the high-water mark ``VmHWM`` is reset to the
  current RSS by writing ``5`` to ``/proc/self/clear_refs`` after the model and input exist, and
  the peak is ``VmHWM - VmRSS`` read just before the forward. Without ``clear_refs`` (other
  systems) the growth of ``getrusage``'s ``ru_maxrss`` over the forward is used, which is lower when
  building the model peaked higher. Both by :class:`sisr.utils.memory.PeakMemory`; the row's
  ``memory_method`` says which. With ``isolate=True`` (default) every model runs in a fresh Python
  process, so memory freed by an earlier model is not reused and the figure is that of a fresh process.
* **Runtime**: median of ``runs`` timed forwards (``time.perf_counter``, CUDA synchronised) after
  ``warmup`` untimed ones, all under ``torch.inference_mode``, batch 1, on ``torch.rand`` input.
  The first warm-up forward is the one whose memory is measured.

Networks have random weights (PyTorch's default initialisation): the counts, memory and times do
not depend on the values (no model here has value-dependent control flow).
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from ..models.registry import count_parameters, create_model, get_info
from ..utils.device import cpu_name, device_name, is_out_of_memory, resolve_device, synchronize
from ..utils.fs import atomic_write_text, check_outputs
from ..utils.memory import PeakMemory

HD_OUTPUT = (720, 1280)  # (H, W) of the output the "Mult-Adds" convention counts for
_RESULT_MARK = "SISR_PROFILE_RESULT "
_MIB = 2**20


# --------------------------------------------------------------------------- FLOP counting


def _sdpa_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_formulas() -> dict:
    """FLOP formulas for operators PyTorch's counter does not know (the CPU fused attention)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _sdpa_forward_flops}


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU fused attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=_custom_formulas())


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of one ``model(x)`` under ``torch.inference_mode``: (total, per operator)."""
    counter = flop_counter()
    with counter, torch.inference_mode():
        model(x)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def count_flops_meta_first(build: Callable[[], torch.nn.Module], input_hw: tuple[int, int], *,
                           fallback_device: str | torch.device = "cpu") -> dict[str, Any]:
    """FLOPs of ``build()`` on a 1x3xHxW input: on ``meta`` when the network runs there, else for real.

    ``build`` is called inside ``with torch.device("meta")`` (it may also move the module there).
    If building or running on ``meta`` fails, ``build`` is called again normally and the network
    runs on a ``torch.rand`` input on ``fallback_device``. Returns ``{"parameters", "flops",
    "macs", "flops_by_op", "flop_counting"}``, ``flop_counting`` = ``"meta"`` or that device.
    """
    h, w = input_hw
    try:
        with torch.device("meta"):  # tensors the forward creates without a device land on meta too
            model = build().to("meta").eval()
            flops, by_op = count_flops(model, torch.empty(1, 3, h, w))
        where = "meta"
    except (NotImplementedError, RuntimeError):
        dev = resolve_device(fallback_device)
        model = build().eval().to(dev)
        flops, by_op = count_flops(model, torch.rand(1, 3, h, w, device=dev))
        where = str(dev)
    return {"parameters": count_parameters(model), "flops": flops, "macs": flops // 2, "flops_by_op": by_op,
            "flop_counting": where}


def count_model_flops(name: str, scale: int, input_hw: tuple[int, int], *, hparams: Mapping[str, Any] | None = None,
                      fallback_device: str | torch.device = "cpu") -> dict[str, Any]:
    """FLOPs of registry model ``name`` at x``scale`` on a 1x3xHxW input (see :func:`count_flops_meta_first`)."""
    hp = dict(hparams or {})
    return count_flops_meta_first(lambda: create_model(name, scale, **hp), input_hw, fallback_device=fallback_device)


def hd_input_hw(scale: int) -> tuple[int, int]:
    """LR size (H, W) whose x``scale`` output is 1280x720: each side rounded to nearest, halves up."""
    return tuple(int(math.floor(side / scale + 0.5)) for side in HD_OUTPUT)  # type: ignore[return-value]


# --------------------------------------------------------------------------- memory and time


def measure(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Peak memory of the first forward and runtimes of the timed ones, in this process.

    ``spec``: ``model``, ``scale``, ``hparams``, ``input_hw``, ``device``, ``warmup`` (>= 1),
    ``runs`` (>= 0), ``seed``, ``threads`` (or None). Running out of memory is a one-line ``ConfigError``.
    """
    try:
        return _measure(spec)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is an allocation failure
        if not is_out_of_memory(exc):
            raise
        h, w = spec["input_hw"]
        raise ConfigError(f"{spec['model']} x{spec['scale']}: out of memory with a {h}x{w} input on "
                          f"{spec['device']}; use a smaller --input") from None


def _measure(spec: Mapping[str, Any]) -> dict[str, Any]:
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    dev = resolve_device(spec["device"])
    torch.manual_seed(int(spec.get("seed", 0)))
    model = create_model(spec["model"], int(spec["scale"]), **spec.get("hparams", {})).eval().to(dev)
    h, w = spec["input_hw"]
    x = torch.rand(1, 3, h, w, device=dev)
    gc.collect()
    synchronize(dev)

    with torch.inference_mode():
        with PeakMemory(dev, what="the first forward") as mem:  # the first forward: peak memory
            model(x)
        peak, method = mem.bytes, mem.method
        for _ in range(int(spec["warmup"]) - 1):
            model(x)
        synchronize(dev)
        times = []
        for _ in range(int(spec["runs"])):
            t0 = time.perf_counter()
            model(x)
            synchronize(dev)
            times.append(time.perf_counter() - t0)
    return {
        "peak_memory_bytes": None if peak is None else int(peak),
        "memory_method": method,
        "runtimes_s": times,
        "runtime_s": statistics.median(times) if times else None,
        "threads": torch.get_num_threads(),
    }


def _worker_main() -> int:
    """Subprocess entry: spec JSON on stdin, result JSON on stdout after a marker."""
    spec = json.loads(sys.stdin.read())
    result = measure(spec)
    sys.stdout.write(_RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def measure_isolated(spec: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (so memory freed by earlier work is not reused)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the sisr package
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from sisr.evaluation.profile import _worker_main; sys.exit(_worker_main())"],
        input=json.dumps(dict(spec)), capture_output=True, text=True, env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_MARK):
            return json.loads(line[len(_RESULT_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode < 0 or "out of memory" in tail:  # killed (the kernel's OOM killer) or out of memory
        raise ConfigError(f"profiling {spec['model']} x{spec['scale']} failed in its subprocess "
                          f"(exit {proc.returncode}): {tail.split('ConfigError: ')[-1]}")
    raise RuntimeError(f"profiling {spec['model']} x{spec['scale']} failed in its subprocess "
                       f"(exit {proc.returncode}): {tail}")


# --------------------------------------------------------------------------- the table


@dataclass
class ProfileRow:
    model: str
    scale: int
    input_hw: tuple[int, int]
    parameters: int
    flops: int
    macs: int
    flops_by_op: dict[str, int]
    flop_counting: str
    peak_memory_bytes: int | None
    memory_method: str
    runtime_s: float | None
    runtimes_s: list[float]
    hd_input_hw: tuple[int, int]
    hd_output_hw: tuple[int, int]
    hd_mult_adds: int
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProfileResult:
    rows: list[ProfileRow]
    settings: dict[str, Any]
    environment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "sisr-profile", "settings": self.settings, "environment": self.environment,
                "rows": [asdict(r) for r in self.rows]}

    def markdown(self) -> str:
        """The table in the layout of CRAN's Table 7: one column per model, one row per measure."""
        s = self.settings
        dev = self.environment.get("device_name", s["device"])
        mem_name = ("GPU mem. (MiB), allocator peak" if s["device"].startswith("cuda")
                    else f"{s['device'].split(':')[0].upper()} mem. (MiB), RSS peak growth")
        runs = s["runs"]

        def cells(fmt) -> str:
            return " | ".join(fmt(r) for r in self.rows)

        def opt(v, f):
            return "n/a" if v is None else f(v)

        h, w = s["input_hw"]
        lines = [
            "| | " + " | ".join(r.model for r in self.rows) + " |",
            "|---|" + "---:|" * len(self.rows),
            "| Parameters (M) | " + cells(lambda r: f"{r.parameters / 1e6:,.2f}") + " |",
            "| FLOPs (G) | " + cells(lambda r: f"{r.flops / 1e9:,.2f}") + " |",
            "| MACs (G) | " + cells(lambda r: f"{r.macs / 1e9:,.2f}") + " |",
            f"| {mem_name} | " + cells(lambda r: opt(r.peak_memory_bytes, lambda b: f"{b / _MIB:,.0f}")) + " |",
            f"| Running time (s), median of {runs} | "
            + cells(lambda r: opt(r.runtime_s, lambda t: f"{t:,.3f}" if t < 10 else f"{t:,.2f}")) + " |",
            "| Mult-Adds (G), 1280x720 output | " + cells(lambda r: f"{r.hd_mult_adds / 1e9:,.1f}") + " |",
        ]
        caption = (f"x{s['scale']}, input 3x{h}x{w} (batch 1), {dev}, torch {self.environment['torch']}, "
                   f"random weights. FLOPs: FlopCounterMode on the meta device (convolutions, matrix products, "
                   f"attention; element-wise operations not counted); MACs = FLOPs / 2. Memory: peak growth during "
                   f"the first forward ({'CUDA allocator' if s['device'].startswith('cuda') else 'resident set size'}). "
                   f"Time: median of {runs} forwards after {s['warmup']} warm-up, torch.inference_mode. "
                   f"Mult-Adds: MACs for a 1280x720 output (input 1280/s x 720/s, rounded to nearest).")
        if s.get("tiny"):
            caption += " Tiny test configurations (not the papers' models)."
        return "\n".join(lines) + "\n\n" + caption + "\n"


def parse_hw(text: str) -> tuple[int, int]:
    """``"160x120"`` -> (160, 120) as (H, W); ``ConfigError`` for anything else."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"input size '{text}': expected HxW with two positive integers, e.g. 160x160") from None
    if h < 1 or w < 1:
        raise ConfigError(f"input size '{text}': height and width must be >= 1")
    return h, w


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _environment(dev: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "device": str(dev),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }
    env["device_name"] = device_name(dev)
    if dev.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def profile(models: Sequence[str] | str, scale: int, input_hw: tuple[int, int] = (160, 160), device: str = "cpu", *,
            runs: int = 5, warmup: int = 1, hparams: Mapping[str, Mapping[str, Any]] | None = None,
            tiny: bool = False, isolate: bool = True, threads: int | None = None, seed: int = 0,
            progress: bool | None = None) -> ProfileResult:
    """Complexity rows for registry ``models`` at x``scale`` on a 1x3xHxW input (see the module doc).

    ``hparams`` maps a model name to constructor overrides; ``tiny`` uses each model's test
    configuration (for checking the tool, not for reporting). ``isolate`` runs each model's
    memory and time measurement in a fresh process. ``runs=0`` skips timing.
    """
    from tqdm import tqdm

    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    if not names:
        raise ConfigError("no models given; use registry names, e.g. --models edsr-baseline,rcan")
    scale = int(scale)
    h, w = parse_hw(f"{input_hw[0]}x{input_hw[1]}")
    if runs < 0:
        raise ConfigError(f"runs must be >= 0, got {runs}")
    if warmup < 1:
        raise ConfigError(f"warmup must be >= 1 (the first forward measures memory), got {warmup}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    dev = resolve_device(device)
    per_model: dict[str, dict[str, Any]] = {}
    resolved: dict[str, dict[str, Any]] = {}
    for name in names:  # validate everything before spending any time
        info = get_info(name)
        info.check_scale(scale)
        hp = dict(info.tiny) if tiny else {}
        hp.update((hparams or {}).get(name, {}))
        resolved[info.name] = info.hparams(scale, **hp)  # unknown hyper-parameters fail here
        per_model[info.name] = hp
    if threads:
        torch.set_num_threads(int(threads))

    settings = {"models": list(per_model), "scale": scale, "input_hw": [h, w], "device": str(dev), "runs": runs,
                "warmup": warmup, "tiny": tiny, "isolate": isolate, "seed": seed, "batch": 1,
                "hd_output_hw": list(HD_OUTPUT)}
    environment = _environment(dev)
    environment["loadavg_before"] = _loadavg()
    started = time.time()
    rows = []
    bar = tqdm(list(per_model.items()), desc="profile", unit="model",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    for name, hp in bar:
        bar.set_postfix_str(name)
        counted = count_model_flops(name, scale, (h, w), hparams=hp, fallback_device=dev)
        hd_in = hd_input_hw(scale)
        hd = count_model_flops(name, scale, hd_in, hparams=hp, fallback_device=dev)
        spec = {"model": name, "scale": scale, "hparams": hp, "input_hw": [h, w], "device": str(dev),
                "warmup": warmup, "runs": runs, "seed": seed, "threads": threads or torch.get_num_threads()}
        measured = measure_isolated(spec) if isolate else measure(spec)
        if isolate:
            measured["memory_method"] += " (fresh process per model)"
        rows.append(ProfileRow(
            model=name, scale=scale, input_hw=(h, w), parameters=counted["parameters"], flops=counted["flops"],
            macs=counted["macs"], flops_by_op=counted["flops_by_op"], flop_counting=counted["flop_counting"],
            peak_memory_bytes=measured["peak_memory_bytes"], memory_method=measured["memory_method"],
            runtime_s=measured["runtime_s"], runtimes_s=measured["runtimes_s"], hd_input_hw=hd_in,
            hd_output_hw=(hd_in[0] * scale, hd_in[1] * scale), hd_mult_adds=hd["macs"], hparams=resolved[name],
        ))
    environment["loadavg_after"] = _loadavg()
    environment["wall_s"] = round(time.time() - started, 1)
    return ProfileResult(rows, settings, environment)


OUTPUT_FILES = ("profile.json", "profile.md")


def check_output(out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """``OutputExistsError`` if ``out_dir`` already holds a result file and ``overwrite`` is not set."""
    check_outputs(out_dir, OUTPUT_FILES, overwrite)


def save_profile(result: ProfileResult, out_dir: str | os.PathLike | None = None, *,
                 overwrite: bool = False) -> Path:
    """Write ``profile.json`` and ``profile.md`` into ``out_dir`` (default ``results/profile-x<s>-<time>``).

    Nothing is written when either file exists and ``overwrite`` is not set.
    """
    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path("results") / f"profile-x{result.settings['scale']}-{stamp}"
    out_dir = Path(out_dir)
    texts = dict(zip(OUTPUT_FILES, (json.dumps(result.to_dict(), indent=2) + "\n", result.markdown())))
    check_output(out_dir, overwrite=overwrite)
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text, overwrite=overwrite)
    return out_dir


__all__: Iterable[str] = [
    "HD_OUTPUT", "OUTPUT_FILES", "ProfileResult", "ProfileRow", "check_output", "count_flops", "count_flops_meta_first", "count_model_flops", "flop_counter",
    "hd_input_hw", "measure", "measure_isolated", "parse_hw", "profile", "save_profile",
]
