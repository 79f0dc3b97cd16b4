"""A/B of the glibc allocator setting: python benchmarks/adhoc/malloc_ab.py REPEATS OUT.pt plain|tuned (alternate them)."""
import ctypes
import sys

if sys.argv[3] == "tuned":
    libc = ctypes.CDLL("libc.so.6")
    print(libc.mallopt(-3, 32 << 20), libc.mallopt(-1, 1 << 30), libc.mallopt(-2, 64 << 20), end=" ")
exec(open(__file__.replace("malloc_ab.py", "defian_cl_time.py")).read())
