"""sisr serve on a warm server: request latency at 1, 4 and 16 concurrent clients, and the 2-image job of
docs/performance.md through the API beside ONNX Runtime and `sisr upscale`, in one run.

    .venv/bin/python benchmarks/serve.py [--rounds 3] [--json benchmarks/results/serve.json]

* **Latency**: ``sisr serve --model defian-s`` (default threads, ``--concurrency 1``) is started once and warmed
  up; then ``POST /v1/upscale`` of 256x256 RGB PNGs at x2 from 1, 4 and 16 client threads (urllib, keep-alive
  off), each client sending ``--per-client`` requests (at least 8 in all). Per request: wall time from sending the
  body to the last byte of the answer. p50/p95, images per second (requests / wall time of the level), and the
  server's peak resident memory (``VmHWM`` of the process) and its RSS after.
* **2-image job**, each a fresh process timed from its start to its exit, in rotating order for ``--rounds``
  rounds (medians): the API job (a standard-library client that posts the two PNGs at once to the warm server
  and writes the answers), the ONNX Runtime job of ``benchmarks/folder_job.py`` (onnxruntime + numpy + Pillow on
  the graph ``sisr export`` wrote beforehand, not timed) and ``sisr upscale IN -o OUT --scale 2``. The API's
  outputs are compared byte for byte with ``sisr upscale FILE`` of each file alone (same torch threads), and
  pixel by pixel with the folder run, whose two images run side by side with one torch thread each (float
  rounding differs with the thread count: up to 1 grey level).

Inputs: central 256x256 crops of Set14/B100 HR images (../shared/datasets; random pixels without it), the
shipped defian-s x2. The load average before and after is printed and stored: on a shared machine the
figures move with it.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from folder_job import ORT_JOB, make_inputs, timed  # noqa: E402 - the same inputs and ONNX Runtime job

SISR = [sys.executable, "-m", "sisr"]
API_JOB = r"""
import pathlib, sys, threading, urllib.request
url, src, dst = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
dst.mkdir(exist_ok=True)
failed = []
def one(f):
    b = "sisr-benchmark-boundary"
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


def body_of(path: Path) -> tuple[bytes, str]:
    b = "sisr-benchmark-boundary"
    data = (f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n\r\n'.encode()
            + path.read_bytes() + f"\r\n--{b}--\r\n".encode())
    return data, f"multipart/form-data; boundary={b}"


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*SISR, "serve", "--port", "0", "--model", "defian-s", "--queue", "64"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        match = re.search(r"sisr serve: (http://\S+?/) ", line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, match.group(1)
    raise SystemExit(f"sisr serve did not start (exit {proc.wait()})")


def memory_kib(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) for key in ("VmRSS", "VmHWM")}


def latency(url: str, files: list[Path], clients: int, per_client: int) -> dict:
    bodies = [body_of(f) for f in files]
    n = max(8, clients * per_client)

    def one(i: int) -> float:
        data, content_type = bodies[i % len(bodies)]
        request = urllib.request.Request(url + "v1/upscale", data=data, headers={"Content-Type": content_type})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as answer:
            answer.read()
        return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        times = sorted(pool.map(one, range(n)))
        wall = time.perf_counter() - start
    q = statistics.quantiles(times, n=20, method="inclusive")
    return {"clients": clients, "requests": n, "p50_s": statistics.median(times), "p95_s": q[18],
            "images_per_s": n / wall, "wall_s": wall}


def two_image_jobs(work: Path, env: dict, url: str, rounds: int) -> dict[str, list[float]]:
    inputs, onnx = work / "in2", work / "defian-s_x2.onnx"
    jobs = {
        "API job (warm sisr serve, 2 requests at once)": (
            [sys.executable, "-c", API_JOB, url, str(inputs), str(work / "out" / "api")], work / "out" / "api"),
        "ONNX Runtime job (graph of sisr export)": (
            [sys.executable, "-c", ORT_JOB, str(onnx), str(inputs), str(work / "out" / "ort"), "0"],
            work / "out" / "ort"),
        "sisr upscale (default: auto)": (
            [*SISR, "upscale", str(inputs), "-o", str(work / "out" / "cli"), "--scale", "2"], work / "out" / "cli"),
    }
    times: dict[str, list[float]] = {k: [] for k in jobs}
    names = list(jobs)
    for r in range(rounds):
        for key in names[r % len(names):] + names[:r % len(names)]:
            command, out = jobs[key]
            times[key].append(timed(command, env, out))
    return times


def compare_outputs(work: Path, env: dict) -> dict:
    """The API's outputs against ``sisr upscale FILE`` of each file alone (same torch threads: expected equal) and
    against the 2-image folder run (whose images run side by side with one torch thread each)."""
    import numpy as np
    from PIL import Image

    out = {"identical_to_sisr_upscale_of_each_file": True, "max_pixel_diff_to_folder_run": 0}
    for f in sorted((work / "in2").glob("*.png")):
        single = work / "out" / "single" / f.stem
        subprocess.run([*SISR, "upscale", str(f), "-o", str(single), "--scale", "2"], env=env, check=True,
                       capture_output=True)
        api = (work / "out" / "api" / f.name)
        out["identical_to_sisr_upscale_of_each_file"] &= api.read_bytes() == (single / f.name).read_bytes()
        diff = np.abs(np.asarray(Image.open(api), dtype=np.int16) -
                      np.asarray(Image.open(work / "out" / "cli" / f.name), dtype=np.int16)).max()
        out["max_pixel_diff_to_folder_run"] = max(out["max_pixel_diff_to_folder_run"], int(diff))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-client", type=int, default=2, help="requests per client at each level (default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = p.parse_args(argv)
    import sisr

    compileall.compile_dir(Path(sisr.__file__).parent, quiet=1)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="sisr_serve_bench_"))
    env = dict(os.environ)
    env.pop("SISR_CACHE_DIR", None)
    proc = None
    try:
        source = make_inputs(work / "in", 8, 256)
        (work / "in2").mkdir()
        (work / "out").mkdir()
        for f in sorted((work / "in").glob("*.png"))[:2]:
            shutil.copy(f, work / "in2" / f.name)
        subprocess.run([*SISR, "export", "--model", "defian-s", "--scale", "2", "-o", str(work / "defian-s_x2.onnx")],
                       env=env, check=True, capture_output=True)
        proc, url = start_server(env)
        files = sorted((work / "in").glob("*.png"))
        latency(url, files, 2, 2)  # warm-up: first calls of the network and of the thread pools
        levels = []
        for clients in (1, 4, 16):
            levels.append(latency(url, files, clients, args.per_client))
            print(f"{clients} client(s): p50 {levels[-1]['p50_s']:.3f} s", flush=True)
        memory = memory_kib(proc.pid)
        jobs = two_image_jobs(work, env, url, args.rounds)
        identical = compare_outputs(work, env)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    report(args, source, levels, memory, jobs, identical, load_before, load_after)
    return 0


def report(args, source, levels, memory, jobs, identical, load_before, load_after) -> None:
    print(f"\nsisr serve, defian-s x2 (shipped), 256x256 RGB PNGs ({source}); {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| clients | requests | p50 s | p95 s | images/s |\n|---:|---:|---:|---:|---:|")
    for level in levels:
        print(f"| {level['clients']} | {level['requests']} | {level['p50_s']:.3f} | {level['p95_s']:.3f} | "
              f"{level['images_per_s']:.2f} |")
    print(f"\nserver memory: peak RSS {memory['VmHWM'] / 1024:.0f} MiB, RSS after the latency runs "
          f"{memory['VmRSS'] / 1024:.0f} MiB\n")
    med = {k: statistics.median(v) for k, v in jobs.items()}
    ref = med["ONNX Runtime job (graph of sisr export)"]
    print(f"2-image job, fresh process each, median of {args.rounds}:\n")
    print("| job | wall s | ratio to ONNX Runtime |\n|---|---:|---:|")
    for key, value in med.items():
        print(f"| {key} | {value:.2f} | {value / ref:.2f} |")
    print(f"\nAPI outputs byte-identical to `sisr upscale FILE` of each file: "
          f"{identical['identical_to_sisr_upscale_of_each_file']}; largest pixel difference to the 2-image "
          f"`sisr upscale` run (side by side, one thread each): {identical['max_pixel_diff_to_folder_run']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(
        source=source, size=256, scale=2, model="defian-s (shipped)", cpus=os.cpu_count(), rounds=args.rounds,
        latency=levels, server_memory_kib=memory, two_image_job_s=jobs, two_image_job_median_s=med,
        ratio_to_ort={k: v / ref for k, v in med.items()}, api_outputs=identical,
        load_average_before=load_before, load_average_after=load_after, python=platform.python_version(),
        machine=platform.machine()), indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
