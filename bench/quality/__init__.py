"""The pieces of `bench/quality_bench.py`: scoring logic (`scoring`) and the timed runs (`runs`)."""
