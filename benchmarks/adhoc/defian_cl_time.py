"""DeFiAN-S x2 on a 256x256 LR image, 1 thread, channels_last: median ms; saves the output to compare code versions.

    OMP_NUM_THREADS=1 PYTHONPATH=<old checkout>/src .venv/bin/python benchmarks/adhoc/defian_cl_time.py 4 /tmp/y_old.pt
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adhoc/defian_cl_time.py 4 /tmp/y_new.pt   (alternate, twice)
"""
import sys, torch, time, statistics
torch.set_num_threads(1)
import sisr
net = sisr.load_model("defian-s", 2, device="cpu").eval().to(memory_format=torch.channels_last)
x = torch.rand(1,3,256,256, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
with torch.inference_mode():
    y = net(x); ts=[]
    for _ in range(int(sys.argv[1])):
        t=time.perf_counter(); net(x); ts.append(time.perf_counter()-t)
torch.save(y, sys.argv[2])
print(sisr.__file__.split('/')[2], round(statistics.median(ts)*1e3))
