"""What several benchmarks share: server processes, resident memory, a never-reading HTTP/2
client, seeded weights. Bench-side on purpose: the benchmarks import nothing from `tests`.

Importing this package imports nothing beyond the standard library (`rss` runs on bare GPU
machines); each module brings in only what it needs.
"""
