"""OpenMP waiting policy: PASSIVE (sisr's old default) vs bounded spinning, on a quiet and a busy machine.

    .venv/bin/python benchmarks/adhoc/omp_wait.py [--rounds 2]

Workloads (each a fresh process, torch's default threads): DeFiAN-S x2 forward (run(), shipped weights)
on a 96x96 and a 256x256 LR input (median of 5 after one warm-up), and 100 iterations of `sisr train`
of a tiny EDSR baseline (2 blocks, 16 channels, batch 16, LR patch 48: many small operators). "busy":
two `nice -n 19` busy loops run on the cores meanwhile; "contended": two busy loops at the same priority. Policies: the environment given to the process.
"""
import argparse, json, os, re, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
D = ROOT.parent / "shared" / "datasets"
POLICIES = {"PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin 10k": {"GOMP_SPINCOUNT": "10000"},
            "PASSIVE + spin 10k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"},
            "spin 100k": {"GOMP_SPINCOUNT": "100000"}, "libgomp default (300k)": {}}
FORWARD = r"""
import sys, time, torch
from sisr.utils.malloc import keep_freed_memory; keep_freed_memory()
import sisr
from sisr.inference.forward import run
net = sisr.load_model("defian-s", 2, device="cpu").eval()
x = torch.rand(1, 3, int(sys.argv[1]), int(sys.argv[1]))
run(net, x); ts = []
for _ in range(5):
    t = time.perf_counter(); run(net, x); ts.append(time.perf_counter() - t)
print(sorted(ts)[2])
"""


def workload(name, env):
    if name.startswith("defian-s"):
        out = subprocess.run([sys.executable, "-c", FORWARD, name.split()[-1]], env=env, capture_output=True,
                             text=True, check=True).stdout
        return float(out.split()[-1])
    run_dir = Path("/tmp/omp_wait_run")
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sisr", "train", "--config", "edsr-baseline", "--run-dir", str(run_dir),
                    "model.hparams={n_resblocks: 2, n_feats: 16}", f"data.hr=[{D}/T91/HR]", "train.iterations=100",
                    "val.every=0", "data.workers=0", "train.checkpoint_every=1000", "log.every=100",
                    "train.batch_size=16"], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--machines", nargs="+", default=["quiet", "busy", "contended"])
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "omp_wait.json"))
    args = p.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    works = ["defian-s 96", "defian-s 256", "tiny train 100 its"]
    res = {}
    for machine in args.machines:
        nice = ["nice", "-n", "19"] if machine == "busy" else []
        hogs = [subprocess.Popen([*nice, sys.executable, "-c", "while True: pass"])
                for _ in range(0 if machine == "quiet" else 2)]
        try:
            for r in range(args.rounds):
                for pol, extra in POLICIES.items():
                    for w in works:
                        s = workload(w, dict(base, **extra))
                        res.setdefault(f"{machine}|{pol}|{w}", []).append(s)
                        print(f"{machine:5s} {pol:24s} {w:20s} {s:8.3f} s", flush=True)
        finally:
            for h in hogs:
                h.kill()
    print("\n| machine | policy | " + " | ".join(works) + " |\n|---|---|" + "---:|" * len(works))
    for machine in args.machines:
        for pol in POLICIES:
            cells = [statistics.median(res[f"{machine}|{pol}|{w}"]) for w in works]
            print(f"| {machine} | {pol} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    Path(args.json).write_text(json.dumps(dict(seconds=res, cpu_count=os.cpu_count()), indent=1))
    print("wrote", args.json)


if __name__ == "__main__":
    main()
