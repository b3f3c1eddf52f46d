"""The pieces of `bench/gpu_bench.py`: the parts each child process runs, the parent's table."""
