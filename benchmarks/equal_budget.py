"""Equal-budget training comparison: rcan, cran (with and without the mask fix), eacrn, csnln, defian-s, edsr-baseline.

Every network is trained with the same data, seed, iterations, batch, LR patch, optimiser and
schedule, at (about) the same parameter count, and validated on Set5 x2 (Y PSNR, shave 2, the
papers' convention) every ``--val-every`` iterations. No paper has this comparison: each compares
fully trained, differently sized models.

* CPU form (default): reduced networks of 0.29-0.32 M parameters (``REDUCED``; the counts are
  checked to lie within 10 % of each other before anything trains), Adam (0.9, 0.999, 1e-8),
  lr ``--lr`` halved after 3/4 of the iterations, L1, LR patch ``--patch``, batch ``--batch``.
* ``--full``: the registry's paper-size networks (use with ``--device cuda``).
* ``--time-only``: a few timed iterations of each network, to size ``--iterations`` to a budget.

Data: the training sets under ../shared/datasets (T91, General100, BSD200 HR, bicubic LR made by
``sisr.data.degrade``, cached by ``sisr.data.training``); Set5/Set14/B100 are never trained on.
Training uses the library's own pieces: ``PatchDataset`` / ``make_loader`` (seeded, replayable
sampling), ``TrainStep`` (forward, L1, backward, Adam) and ``Validator`` (what ``sisr train`` runs).

CRAN's mask: for both CRAN variants the script records, at initialisation and after training, the
fraction of every CRAC's mask entries in (0.01, 0.99) and the ratio of the gradient norm of the mask
parameters (W_E, CDRR, W_ci, W_A1, W_A2) to that of the kernel, on a fixed 48x48 crop of Set5
``babyx2.png`` (L1 against its HR crop; a measurement, not training data).

Resumable: each network keeps ``<state-dir>/<key>.pt`` (checkpoint at every validation) and
``<key>.json`` once finished; a restart skips finished networks and resumes the others.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/equal_budget.py --time-only
    nohup nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/equal_budget.py --iterations 600 \\
        > runs/equal_budget.log 2>&1 &
    .venv/bin/python benchmarks/equal_budget.py --device cuda --full --iterations 20000 --batch 16 --patch 48
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sisr
from sisr.data.io import image_to_tensor, read_image
from sisr.data.training import PatchDataset, make_loader, prepare_pairs
from sisr.models import count_parameters
from sisr.training.trainer import TrainStep, Validator
from sisr.utils.fs import atomic_write_bytes, atomic_write_text
from sisr.utils.plot import line_chart, save_png

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_SETS = ("T91", "General100", "BSD200")

# key -> (registry name, reduced hparams, hparams for --full on top of the registry defaults)
NETWORKS: dict[str, tuple[str, dict, dict]] = {
    "rcan": ("rcan", {"n_resgroups": 2, "n_resblocks": 6, "n_feats": 32, "reduction": 16}, {}),
    "cran": ("cran", {"n_resgroups": 2, "n_resblocks": 6, "n_feats": 32, "ci_groups": 16,
                      "descriptor_norm": "rms"}, {"descriptor_norm": "rms"}),
    "cran-paper": ("cran", {"n_resgroups": 2, "n_resblocks": 6, "n_feats": 32, "ci_groups": 16,
                            "descriptor_norm": "none"}, {"descriptor_norm": "none"}),
    "eacrn": ("eacrn", {"n_groups": 2, "n_blocks": 4, "n_feats": 20}, {}),
    "csnln": ("csnln", {"n_feats": 40, "depth": 6}, {}),
    "defian-s": ("defian-s", {"n_channels": 32, "n_blocks": 4, "n_modules": 3}, {}),
    "edsr-baseline": ("edsr-baseline", {"n_resblocks": 14, "n_feats": 32}, {}),
}
REDUCED = {k: v[1] for k, v in NETWORKS.items()}
SCALE = 2


def build(key: str, full: bool) -> torch.nn.Module:
    name, reduced, full_hp = NETWORKS[key]
    return sisr.create_model(name, scale=SCALE, **(full_hp if full else reduced))


def check_budget(full: bool) -> dict[str, int]:
    counts = {k: count_parameters(build(k, full)) for k in NETWORKS}
    if not full and max(counts.values()) > 1.10 * min(counts.values()):
        raise SystemExit(f"reduced parameter counts are not within 10% of each other: {counts}")
    return counts


# --------------------------------------------------------------------------- CRAN mask probe

def mask_probe(model: torch.nn.Module, device: torch.device) -> dict | None:
    """Mask entries in (0.01, 0.99) per CRAC and the mask/kernel gradient-norm ratio, on a Set5 crop."""
    from sisr.models.cran import CRAC

    cracs = [m for m in model.modules() if isinstance(m, CRAC)]
    if not cracs:
        return None
    lr = image_to_tensor(read_image(DATASETS / "Set5" / "LR_bicubic" / "X2" / "babyx2.png"))[None, :, 100:148, 100:148]
    hr = image_to_tensor(read_image(DATASETS / "Set5" / "HR" / "baby.png"))[None, :, 200:296, 200:296]
    fractions: list[float] = []

    def hook(mod, inputs, _output):
        with torch.no_grad():
            mask = mod.mask(inputs[0])
            fractions.append(float(((mask > 0.01) & (mask < 0.99)).float().mean()))

    was_training = model.training
    model.eval()
    handles = [c.register_forward_hook(hook) for c in cracs]
    model.zero_grad(set_to_none=True)
    try:
        (model(lr.to(device)) - hr.to(device)).abs().mean().backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ratios = []
    for c in cracs:
        mask_grad = math.sqrt(sum(float(p.grad.pow(2).sum()) for n, p in c.named_parameters()
                                  if n not in ("weight", "bias")))
        ratios.append(mask_grad / max(float(c.weight.grad.norm()), 1e-30))
    model.zero_grad(set_to_none=True)
    return {"in_range_fraction": fractions, "min_in_range": min(fractions),
            "median_in_range": statistics.median(fractions), "grad_ratio": ratios,
            "median_grad_ratio": statistics.median(ratios)}


# --------------------------------------------------------------------------- training

def central_crop(item: tuple, size: int) -> tuple:
    """(name, lr, hr) cut to the central size x size LR window (and the matching HR window)."""
    name, lr, hr = item
    h, w = lr.shape[-2:]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return name, lr[:, y:y + size, x:x + size], hr[:, SCALE * y:SCALE * (y + size), SCALE * x:SCALE * (x + size)]


def make_data(args: argparse.Namespace) -> PatchDataset:
    sources = [str(args.data / s) for s in TRAIN_SETS if (args.data / s).is_dir()]
    pairs = prepare_pairs(sources, SCALE, args.patch, cache_dir=args.state_dir / "cache", report=False)
    return PatchDataset(pairs, SCALE, args.patch, seed=args.seed, augment=True,
                        samples_per_epoch=args.batch * args.iterations)


def optimiser(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                            betas=(0.9, 0.999), eps=1e-8)


def lr_at(args: argparse.Namespace, iteration: int) -> float:
    return args.lr * (0.5 if iteration >= int(0.75 * args.iterations) else 1.0)


def train_one(key: str, args: argparse.Namespace, data: PatchDataset, validator: Validator,
              device: torch.device) -> dict:
    ckpt_path = args.state_dir / f"{key}.pt"
    torch.manual_seed(args.seed)
    model = build(key, args.full).to(device)
    opt = optimiser(model, args.lr)
    record = {"key": key, "model": NETWORKS[key][0], "hparams": dict(model.sisr_spec.hparams),
              "parameters": count_parameters(model), "curve": [], "train_seconds": 0.0, "loss": []}
    start = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        record, start = state["record"], state["iteration"]
        print(f"{key}: resuming at iteration {start}", flush=True)
    else:
        record["mask_at_init"] = mask_probe(model, device)
        record["curve"].append([0, validator(model)["psnr"]])
    step = TrainStep(model, opt, device=device)
    model.train()
    iteration, window = start, []
    tick = time.perf_counter()
    for lr_batch, hr_batch in make_loader(data, start, args.iterations, args.batch):
        for group in opt.param_groups:
            group["lr"] = lr_at(args, iteration)
        result = step(lr_batch, hr_batch)
        iteration += 1
        window.append(result.loss)
        if iteration % args.val_every == 0 or iteration == args.iterations:
            record["train_seconds"] += time.perf_counter() - tick
            record["loss"].append([iteration, float(np.mean(window))])
            window = []
            psnr = validator(model)["psnr"]
            record["curve"].append([iteration, psnr])
            print(f"{key}: it {iteration}/{args.iterations} loss {record['loss'][-1][1]:.4f} "
                  f"Set5 {psnr:.3f} dB ({record['train_seconds']:.0f} s training)", flush=True)
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "record": record,
                     "iteration": iteration}
            tmp = ckpt_path.with_suffix(".pt.tmp")
            torch.save(state, tmp)
            tmp.replace(ckpt_path)
            tick = time.perf_counter()
    record["seconds_per_iteration"] = record["train_seconds"] / max(args.iterations, 1)
    record["final_psnr"] = record["curve"][-1][1]
    record["best_psnr"] = max(p for _, p in record["curve"])
    record["mask_after_training"] = mask_probe(model, device)
    return record


def time_only(args: argparse.Namespace, data: PatchDataset, device: torch.device) -> None:
    counts = check_budget(args.full)
    for key in args.networks:
        torch.manual_seed(args.seed)
        model = build(key, args.full).to(device)
        step = TrainStep(model, optimiser(model, args.lr), device=device)
        times = []
        for i, (lr_batch, hr_batch) in enumerate(make_loader(data, 0, args.time_iterations + 1, args.batch)):
            tick = time.perf_counter()
            step(lr_batch, hr_batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - tick)
        print(f"{key:<14} {counts[key]:>10,} params  {statistics.median(times):.3f} s/iteration "
              f"(median of {len(times)}, batch {args.batch}, patch {args.patch})", flush=True)


# --------------------------------------------------------------------------- report

def report(records: dict[str, dict], args: argparse.Namespace, counts: dict[str, int]) -> str:
    base = records.get("rcan", {}).get("final_psnr")
    lines = [f"| network | parameters | Set5 x2 PSNR at {args.iterations} it (dB) | best (dB) | vs rcan (dB) "
             f"| s / iteration |", "|---|---:|---:|---:|---:|---:|"]
    for key in NETWORKS:
        if key not in records:
            continue
        r = records[key]
        diff = "" if base is None else f"{r['final_psnr'] - base:+.3f}"
        lines.append(f"| {key} | {r['parameters']:,} | {r['final_psnr']:.3f} | {r['best_psnr']:.3f} | {diff} "
                     f"| {r['seconds_per_iteration']:.3f} |")
    for key in ("cran", "cran-paper"):
        r = records.get(key)
        if r and r.get("mask_at_init"):
            a, b = r["mask_at_init"], r["mask_after_training"]
            lines.append(f"\n{key}: mask entries in (0.01, 0.99) median/min over CRACs {a['median_in_range']:.3f}/"
                         f"{a['min_in_range']:.3f} at init, {b['median_in_range']:.3f}/{b['min_in_range']:.3f} after "
                         f"training; mask/kernel gradient-norm ratio (median) {a['median_grad_ratio']:.3g} -> "
                         f"{b['median_grad_ratio']:.3g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32, help="LR patch size")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--val-every", type=int, default=150)
    parser.add_argument("--val-crop", type=int, default=0,
                        help="validate on the central VAL_CROP x VAL_CROP LR crop of each Set5 image (0: whole images)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="paper-size networks (registry defaults)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--data", type=Path, default=DATASETS, help="folder holding T91, General100, BSD200, Set5")
    parser.add_argument("--state-dir", type=Path, default=ROOT / "runs" / "equal_budget")
    parser.add_argument("--out", type=Path, default=None,
                        help="results prefix (default benchmarks/results/equal_budget[_full])")
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files")
    parser.add_argument("--time-only", action="store_true", help="time a few iterations per network and stop")
    parser.add_argument("--time-iterations", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.full and args.state_dir == ROOT / "runs" / "equal_budget":
        args.state_dir = ROOT / "runs" / "equal_budget_full"
    args.state_dir.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / ("equal_budget_full" if args.full else "equal_budget")
    data = make_data(args)
    if args.time_only:
        time_only(args, data, device)
        return 0
    counts = check_budget(args.full)
    for path in (out.with_suffix(".json"), out.with_suffix(".png"), out.with_suffix(".md")):
        if path.exists() and not args.overwrite:
            print(f"{path}: already exists (use --overwrite to replace it)", file=sys.stderr)
            return 1
    validator = Validator("Set5", SCALE, root=str(args.data), device=device)
    if args.val_crop:
        validator.items = [central_crop(item, args.val_crop) for item in validator.items]
    settings = {k: getattr(args, k) for k in ("iterations", "batch", "patch", "lr", "val_every", "val_crop", "seed",
                                              "threads", "device", "full")}
    records: dict[str, dict] = {}
    for key in args.networks:
        done = args.state_dir / f"{key}.json"
        if done.exists():
            saved = json.loads(done.read_text())
            if saved.get("settings") == settings:
                records[key] = saved["record"]
                print(f"{key}: finished earlier, {records[key]['final_psnr']:.3f} dB", flush=True)
                continue
            raise SystemExit(f"{done}: finished with other settings ({saved.get('settings')}); "
                             f"remove it or use another --state-dir")
        records[key] = train_one(key, args, data, validator, device)
        atomic_write_text(done, json.dumps({"settings": settings, "record": records[key]}) + "\n", overwrite=True)
    table = report(records, args, counts)
    print(table)
    command = " ".join(["python", "benchmarks/equal_budget.py", *sys.argv[1:]])
    result = {"benchmark": "equal_budget", "settings": settings, "train_sets": list(TRAIN_SETS),
              "validation": "Set5 x2 BI, Y PSNR, shave 2, " + (
                  f"central {args.val_crop}x{args.val_crop} LR crops" if args.val_crop else "whole images"), "parameters": counts,
              "records": records, "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "command": command}
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
    chart = line_chart({k: [tuple(p) for p in r["curve"][1:]] for k, r in records.items()},
                       title=f"Set5 x2 PSNR, equal budget ({'paper size' if args.full else 'reduced, ~0.3M params'})",
                       xlabel="iteration", ylabel="PSNR (dB)")
    save_png(chart, out.with_suffix(".png"), overwrite=args.overwrite)
    atomic_write_text(out.with_suffix(".md"), f"`{command}`\n\n{table}\n", overwrite=args.overwrite)
    print(f"wrote {out.with_suffix('.json')}, .png, .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
