"""The roofline of a forward pass: the device's measured peaks (:func:`peak_rates`), the FLOPs and bytes a
model's forward must move (:func:`model_cost`, with :class:`Traffic` counting bytes on the meta device) and the
time floor they give (:func:`floor_s`). The benchmarks (``benchmarks/inference.py``, ``csnln.py``,
``gpu_suite.py``) build their tables on these; the method is in docs/benchmarks.md."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from ..models import create_model, get_info
from ..utils.device import synchronize
from .profile import count_flops

__all__ = ["timed", "peak_rates", "fp32_peak_key", "Traffic", "model_cost", "combine_peaks", "floor_s"]

MIB = 2**20
LAYER_OPS = {str(k) for k in flop_registry}  # operators with a FLOP formula: convolutions, products, attention


def timed(fn, device: torch.device | str = "cpu") -> tuple[float, object]:
    """Seconds of ``fn()`` and its result: CUDA events between synchronisations on CUDA, else perf_counter."""
    device = torch.device(device)
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        synchronize(device)
        return start.elapsed_time(end) / 1e3, out
    start_s = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start_s, out


def fp32_peak_key(device: torch.device) -> str:
    """The fp32 peak a fraction is taken of: the TF32 one on CUDA whenever a TF32 switch is on (never flattering)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    return "fp32_tf32" if device.type == "cuda" and tf32 else "fp32"


def peak_rates(device: torch.device, n: int, reps: int = 1, calls: int = 5, copy_mib: int = 512,
               conv: bool = False) -> dict[str, float]:
    """FLOP/s of ``torch.mm`` on n x n matrices (``reps`` products a call): fp32 with TF32 off, fp32 with TF32 on
    (CUDA), bf16; with ``conv`` a 1x1 convolution (oneDNN: 1024 channels, 64x64, channels_last) too; the copy
    bandwidth of ``copy_mib`` MiB (bytes read + written per second). Each the best of ``calls`` after a warm-up."""
    def rate(fn, work: float) -> float:
        fn()
        return work / min(timed(fn, device)[0] for _ in range(calls))

    out, tf32 = {}, torch.backends.cuda.matmul.allow_tf32
    try:
        for label, dtype, allow in (("fp32", torch.float32, False), ("fp32_tf32", torch.float32, True),
                                    ("bf16", torch.bfloat16, tf32)):
            if label == "fp32_tf32" and device.type != "cuda":
                continue
            torch.backends.cuda.matmul.allow_tf32 = allow
            a, b, c = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(3))
            out[label] = rate(lambda: [torch.mm(a, b, out=c) for _ in range(reps)], 2.0 * n**3 * reps)
            if conv and label != "fp32_tf32":
                cl = torch.channels_last
                x = torch.randn(1, 1024, 64, 64, device=device, dtype=dtype).contiguous(memory_format=cl)
                w = torch.randn(1024, 1024, 1, 1, device=device, dtype=dtype).contiguous(memory_format=cl)
                out[f"conv1x1_{label}"] = rate(lambda: torch.nn.functional.conv2d(x, w), 2.0 * 1024**2 * 64 * 64)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    src = torch.rand(copy_mib * MIB // 4, device=device)
    dst = torch.empty_like(src)
    out["copy_bytes_per_s"] = rate(lambda: dst.copy_(src), 2.0 * src.numel() * 4)
    return out


class Traffic(TorchDispatchMode):
    """Bytes a forward must move (on the meta device): ``layer_act_bytes``, every operator with a FLOP formula reading
    its activation inputs and writing its output once (element-wise work assumed fused: the floor's lower bound),
    and ``op_bytes``, every operator reading all its inputs and writing its new outputs (eager, unfused; views move
    nothing). Weights are the tensors that require grad."""

    def __init__(self):
        super().__init__()
        self.layer_act_bytes = self.op_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        aliases = [r.alias_info for r in func._schema.returns]
        if aliases and all(a is not None and not a.is_write for a in aliases):
            return out  # view, permute, slice, ...: no data moves (the schema says so: autograd's view flag is not
            # set yet at this level)
        nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
        written = sum(nbytes(t) for t in outs)  # new, or updated in place
        self.op_bytes += sum(nbytes(a) for a in ins) + written
        if str(func._overloadpacket) in LAYER_OPS:
            self.layer_act_bytes += sum(nbytes(a) for a in ins if not a.requires_grad) + written
        return out


def model_cost(name: str, scale: int, size: tuple[int, int], tiny: bool = False) -> dict:
    """FLOPs and byte estimates of one forward on a (1, 3, *size) input, on the meta device."""
    with torch.device("meta"):  # no weights initialised: shapes are all that is needed
        model = create_model(name, scale=scale, **(get_info(name).tiny if tiny else {})).eval().to("meta")
    x = torch.empty(1, 3, *size, device="meta")
    flops, _ = count_flops(model, x)
    tracer = Traffic()
    with torch.no_grad(), tracer:
        y = model(x)
    weights = list(model.parameters()) + list(model.buffers())
    elems, wbytes = sum(t.numel() for t in weights), sum(t.numel() * t.element_size() for t in weights)
    act, ops = tracer.layer_act_bytes, tracer.op_bytes
    return {"flops": flops, "weight_elements": elems, "weight_bytes": wbytes, "io_bytes": (x.numel() + y.numel()) * 4,
            "layer_activation_bytes": act, "layer_bytes": wbytes + act, "op_bytes": ops,
            # bf16 autocast: fp32 weights read, a bf16 copy written and read; activations at 2 bytes
            "layer_bytes_bf16": wbytes + 4 * elems + act // 2,
            "op_bytes_bf16": wbytes + 4 * elems + (ops - wbytes) // 2}


def combine_peaks(samples: list[dict], device) -> dict:
    """Per sample the faster product (matmul or 1x1 convolution) per precision, then the median of the samples
    (what the cores delivered during the run, robust to one lucky sample on a shared machine) and the best."""
    key = fp32_peak_key(device)
    per = [{"fp32": max(s[k] for k in (key, "conv1x1_fp32") if k in s),
            "bf16": max(s[k] for k in ("bf16", "conv1x1_bf16") if k in s), "bytes": s["copy_bytes_per_s"]}
           for s in samples]
    median = {k: statistics.median([s[k] for s in per]) for k in ("fp32", "bf16", "bytes")}
    return {"rule": "median", "samples": len(samples), "fp32_flops_per_s": median["fp32"],
            "bf16_flops_per_s": median["bf16"], "bytes_per_s": median["bytes"], "median": median,
            "best": {k: max(s[k] for s in per) for k in ("fp32", "bf16", "bytes")}}


def floor_s(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> tuple[float, str]:
    compute, memory = flops / peak_flops, nbytes / bandwidth
    return max(compute, memory), ("compute" if compute >= memory else "memory")
