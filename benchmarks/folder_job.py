"""The folder job of issue 15: `sisr upscale` of 8 RGB 256x256 images vs the same job through ONNX Runtime; with
``--serve``, sisr serve warm: request latency at 1, 4 and 16 clients and the 2-image job through the API.

Whole-command wall time (start-up and PNG I/O included), each job a fresh process, in rotating rounds: ``sisr
upscale`` with each backend (compile cold and warm) and a minimal ONNX Runtime script on the graph ``sisr export``
wrote (not timed); central 256x256 crops of Set14/B100 HR images, the shipped defian-s x2; medians, ratios to the ONNX
Runtime job, largest pixel difference to eager. Method: docs/benchmarks.md.

    .venv/bin/python benchmarks/folder_job.py --rounds 3 [--threads 1]
    .venv/bin/python benchmarks/folder_job.py --serve --rounds 3        # benchmarks/results/serve.json
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import numpy as np
from common import md_table, rotate
from PIL import Image

SISR = [sys.executable, "-m", "sisr"]
ORT = "onnxruntime job (graph of sisr export)"
BOUNDARY = "sisr-benchmark-boundary"
ORT_JOB = r"""
import sys, pathlib
import numpy as np, onnxruntime as ort
from PIL import Image
model, src, dst, threads = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
if threads:
    so.intra_op_num_threads = threads
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
dst.mkdir(exist_ok=True)
for f in sorted(src.glob("*.png")):
    x = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 255
    y = sess.run(None, {name: x})[0][0]
    Image.fromarray((np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)).save(dst / f.name)
"""
API_JOB = r"""
import pathlib, sys, threading, urllib.request
url, src, dst, b = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
dst.mkdir(exist_ok=True)
failed = []
def one(f):
    body = (f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{f.name}"\r\n\r\n'.encode()
            + f.read_bytes() + f"\r\n--{b}--\r\n".encode())
    request = urllib.request.Request(url + "v1/upscale", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    try:
        with urllib.request.urlopen(request) as answer:
            (dst / f.name).write_bytes(answer.read())
    except Exception as exc:
        failed.append(f"{f.name}: {exc}")
threads = [threading.Thread(target=one, args=(f,)) for f in sorted(src.glob("*.png"))]
[t.start() for t in threads]
[t.join() for t in threads]
sys.exit("; ".join(failed) or 0)
"""


def prepare(work: Path, n: int, size: int, env: dict) -> str:
    """sisr byte-compiled (as ``pip install`` does), ``n`` inputs in ``work/in`` and the ONNX graph ``sisr export``
    writes; returns where the inputs came from."""
    import sisr

    compileall.compile_dir(Path(sisr.__file__).parent, quiet=1)
    subprocess.run([*SISR, "export", "--model", "defian-s", "--scale", "2", "-o", str(work / "defian-s_x2.onnx")],
                   env=env, check=True, capture_output=True)
    (work / "in").mkdir(parents=True)
    files = sorted((common.DATASETS / "Set14" / "HR").glob("*.png")) + sorted((common.DATASETS / "B100" / "HR").glob(
        "*.png"))
    files = [f for f in files if min(Image.open(f).size) >= size][:n]
    if len(files) < n:
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(work / "in" / f"{i:02d}.png")
        return "random"
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        x, y = (im.width - size) // 2, (im.height - size) // 2
        im.crop((x, y, x + size, y + size)).save(work / "in" / f"{i:02d}.png")
    return "central crops of Set14/B100 HR images"


def timed(cmd: list[str], env: dict, out: Path) -> float:
    """Wall seconds of one command in a fresh process (its output folder emptied first: sisr skips done work)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def max_diff(a: Path, b: Path) -> int:
    return max(int(np.abs(pixels(f) - pixels(b / f.name)).max()) for f in sorted(a.glob("*.png")))


def folder_jobs(work: Path, env: dict, args) -> dict:
    """``sisr upscale`` with each backend and the ONNX Runtime job in rotating rounds; compile cold once, first."""
    def upscale(name: str, *extra: str, cache: str = "warm") -> tuple[list[str], dict, Path]:
        return ([*SISR, "upscale", str(work / "in"), "-o", str(work / "out" / name), "--scale", "2", *extra],
                dict(env, SISR_CACHE_DIR=str(work / f"cache-{cache}")), work / "out" / name)

    jobs = {"sisr upscale (default: auto)": upscale("auto"),
            "sisr upscale --backend eager": upscale("eager", "--backend", "eager"),
            "sisr upscale --backend compile (warm cache)": upscale("compile", "--backend", "compile"),
            "sisr upscale --backend onnxruntime (warm cache)": upscale("ortb", "--backend", "onnxruntime"),
            ORT: ([sys.executable, "-c", ORT_JOB, str(work / "defian-s_x2.onnx"), str(work / "in"),
                   str(work / "out" / "ort"), str(args.threads)], env, work / "out" / "ort")}
    cold = "sisr upscale --backend compile (cold cache, build included)"
    jobs_cold = upscale("compile-cold", "--backend", "compile", cache="cold")
    times = {cold: [timed(*jobs_cold)]}
    for key in list(jobs)[2:4]:
        timed(*jobs[key])  # fills the warm cache (not timed)
    times.update(rotate(jobs, args.rounds, lambda job: timed(*job)))
    diffs = {k: max_diff(job[2], work / "out" / "eager") for k, job in {**jobs, cold: jobs_cold}.items()}
    return {"times_s": times, "max_pixel_diff_vs_eager": diffs}


def serve_jobs(work: Path, env: dict, args) -> dict:
    """A warm ``sisr serve --model defian-s``: latency at 1, 4 and 16 clients, its memory, then the 2-image job
    (the first two inputs) through the API, ONNX Runtime and ``sisr upscale`` in rotating rounds."""
    proc = subprocess.Popen([*SISR, "serve", "--port", "0", "--model", "defian-s", "--queue", "64"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = next((m.group(1) for line in proc.stdout if (m := re.search(r"sisr serve: (http://\S+?/) ", line))), None)
        if url is None:
            raise SystemExit(f"sisr serve did not start (exit {proc.wait()})")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        files, two, out = sorted((work / "in").glob("*.png")), work / "in2", work / "out"
        two.mkdir(), out.mkdir()
        for f in files[:2]:
            shutil.copy(f, two / f.name)
        latency(url, files, 2, 2)  # warm-up: first calls of the network and of the thread pools
        result = {"latency": [latency(url, files, clients, args.per_client) for clients in (1, 4, 16)]}
        status = Path(f"/proc/{proc.pid}/status").read_text()
        result["server_memory_kib"] = {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) for k in ("VmRSS",
                                                                                                          "VmHWM")}
        result["times_s"] = rotate({
            "API job (warm sisr serve, 2 requests at once)": (
                [sys.executable, "-c", API_JOB, url, str(two), str(out / "api"), BOUNDARY], env, out / "api"),
            ORT: ([sys.executable, "-c", ORT_JOB, str(work / "defian-s_x2.onnx"), str(two), str(out / "ort"), "0"],
                  env, out / "ort"),
            "sisr upscale (default: auto)": ([*SISR, "upscale", str(two), "-o", str(out / "cli"), "--scale", "2"], env,
                                             out / "cli")}, args.rounds, lambda job: timed(*job))
    finally:
        proc.terminate()
        proc.wait(60)
    result["api_outputs"] = {"identical_to_sisr_upscale_of_each_file": True,
                             "max_pixel_diff_to_folder_run": max_diff(out / "api", out / "cli")}
    for f in sorted(two.glob("*.png")):  # the same torch threads as the server: expected equal
        subprocess.run([*SISR, "upscale", str(f), "-o", str(out / "single"), "--scale", "2"], env=env, check=True,
                       capture_output=True)
        result["api_outputs"]["identical_to_sisr_upscale_of_each_file"] &= (
            (out / "api" / f.name).read_bytes() == (out / "single" / f.name).read_bytes())
    return result


def latency(url: str, files: list[Path], clients: int, per_client: int) -> dict:
    """``clients`` threads posting ``files`` in turn (at least 8 requests): p50/p95 of send-to-last-byte, images/s."""
    bodies = [(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{f.name}"\r\n\r\n'.encode()
               + f.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()) for f in files]
    n = max(8, clients * per_client)

    def one(i: int) -> float:
        request = urllib.request.Request(url + "v1/upscale", data=bodies[i % len(bodies)],
                                         headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as answer:
            answer.read()
        return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        times = sorted(pool.map(one, range(n)))
        wall = time.perf_counter() - start
    return {"clients": clients, "requests": n, "p50_s": statistics.median(times), "images_per_s": n / wall,
            "p95_s": statistics.quantiles(times, n=20, method="inclusive")[18], "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    p = common.make_parser(__doc__, "")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS and ONNX Runtime threads (0: defaults)")
    p.add_argument("--serve", action="store_true", help="sisr serve: latency and the 2-image job through the API")
    p.add_argument("--per-client", type=int, default=2, help="--serve: requests per client at each level")
    args = p.parse_args(argv)
    threads = args.threads or "default"
    name = "serve.json" if args.serve else f"folder_job_threads-{threads}.json"
    path = common.check_json(args.json or common.RESULTS / name, args.overwrite)
    work, load_before = Path(tempfile.mkdtemp(prefix="sisr_folder_job_")), os.getloadavg()
    env = {k: v for k, v in os.environ.items() if k != "SISR_CACHE_DIR"}  # sisr's own OpenMP defaults
    env.update({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    try:
        source = prepare(work, args.images, args.size, env)
        result = (serve_jobs if args.serve else folder_jobs)(work, env, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in result["times_s"].items()}
    diffs = result.get("max_pixel_diff_vs_eager", {})
    print(f"\n{args.images} RGB {args.size}x{args.size} images ({source}), defian-s x2 shipped weights, threads "
          f"{threads}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after; median of {args.rounds}, each job a fresh process\n")
    if args.serve:
        print("\n".join(md_table(["clients", "requests", "p50 s", "p95 s", "images/s"], [
            [str(x["clients"]), str(x["requests"]), f"{x['p50_s']:.3f}", f"{x['p95_s']:.3f}",
             f"{x['images_per_s']:.2f}"] for x in result["latency"]]) + [
            f"\nserver peak RSS {result['server_memory_kib']['VmHWM'] / 1024:.0f} MiB; API outputs: "
            f"{result['api_outputs']}\n\n2-image job:\n"]))
    print("\n".join(md_table(["job", "wall s", "ratio to the ONNX Runtime job", "max pixel diff vs eager"], [
        [k, f"{v:.2f}", f"{v / med[ORT]:.2f}", str(diffs.get(k, "-"))] for k, v in med.items()])))
    common.write_json(path, {"images": args.images, "size": args.size, "source": source, "threads": threads,
                             "rounds": args.rounds, "model": "defian-s x2 (shipped)", "cpus": os.cpu_count(),
                             **result, "median_s": med, "ratio_to_ort": {k: v / med[ORT] for k, v in med.items()},
                             "load_average_before": load_before, "load_average_after": os.getloadavg()},
                      args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
