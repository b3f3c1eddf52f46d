"""The pieces of `bench/shape_bench.py`: the old per-shape engine, the measurements."""
