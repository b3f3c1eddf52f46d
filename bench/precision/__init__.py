"""The parts of `bench/precision_bench.py`."""
