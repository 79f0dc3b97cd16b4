"""What the benchmarks share: paths, timing in rotating rounds, device peaks, Markdown tables, JSON results.

Imported by every benchmark (and scripts/gpu_train_defian_s.py) from its own folder; importing it makes ``sisr``
importable from a checkout without ``PYTHONPATH=src``. The methods are described in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results"
MIB = 2**20
try:
    import sisr  # noqa: F401
except ImportError:  # a checkout run without PYTHONPATH=src (the device machine)
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from sisr.evaluation.roofline import timed  # noqa: E402,F401  (the benchmarks import it from here)
from sisr.utils.environment import environment  # noqa: E402
from sisr.utils.fs import atomic_write_text  # noqa: E402
from sisr.utils.memory import PeakMemory  # noqa: E402


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def with_peak(fn, device: torch.device | str):
    """``fn()`` and the CUDA allocator's peak above what was allocated before (None off CUDA)."""
    if torch.device(device).type != "cuda":
        return fn(), None
    with PeakMemory(device) as mem:
        out = fn()
    return out, mem.bytes


def rotate(calls: dict, rounds: int, measure=lambda fn: timed(fn)[0]) -> dict[str, list]:
    """``measure(call)`` of every call, ``rounds`` rounds, the order rotated each round (load hits all alike)."""
    names, out = list(calls), {name: [] for name in calls}
    for r in range(rounds):
        k = r % max(1, len(names))
        for name in names[k:] + names[:k]:
            out[name].append(measure(calls[name]))
    return out


def free(device: torch.device | str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def native_cpu_bf16() -> bool | None:
    """Whether the CPU has bf16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo); None when unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fmt(value, spec: str = "{:.2f}", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return spec.format(value * scale)


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def make_parser(doc: str, json_name: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the doc's first line and, with ``json_name``, ``--json`` (default
    ``benchmarks/results/<json_name>``; "" leaves it None for the script to name) and ``--overwrite``."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    if json_name is not None:
        p.add_argument("--json", type=Path, default=RESULTS / json_name if json_name else None,
                       help="results file (default under benchmarks/results/)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    return p


def check_json(path: Path, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise SystemExit(f"{path}: already exists (use --overwrite or another --json)")
    return path


def write_json(path: Path, result: dict, overwrite: bool) -> None:
    """``result`` and the ``environment`` it was measured in (``sisr.utils.environment``), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**result, "environment": environment()}, indent=1, default=str) + "\n"
    atomic_write_text(path, text, overwrite=overwrite)
    print(f"wrote {path}")


def run_worker(script: str | Path, *args: str) -> dict:
    """``script`` in a fresh Python process (one measurement alone in it); the last line it prints, as JSON."""
    proc = subprocess.run([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"benchmark worker {Path(script).name} {' '.join(args)} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])
