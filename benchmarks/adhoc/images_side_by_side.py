"""8 DeFiAN-S x2 256x256 images through run(): 2 threads per image vs two images side by side on one thread each.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/adhoc/images_side_by_side.py
"""
import torch, time, sisr
from concurrent.futures import ThreadPoolExecutor
from sisr.utils.malloc import keep_freed_memory
keep_freed_memory()
from sisr.inference.forward import run
net = sisr.load_model("defian-s", 2, device="cpu").eval()
xs = [torch.rand(1,3,256,256, generator=torch.Generator().manual_seed(i)) for i in range(8)]
run(net, xs[0])
for r in range(2):
    torch.set_num_threads(2); t = time.perf_counter()
    for x in xs: run(net, x)
    seq = time.perf_counter() - t
    torch.set_num_threads(1); t = time.perf_counter()  # the network is channels_last, as loaded on the CPU
    with ThreadPoolExecutor(2) as pool: list(pool.map(lambda x: run(net, x), xs))
    par = time.perf_counter() - t
    print(f"sequential 2 threads {seq:.2f} s, 2 images side by side {par:.2f} s")
