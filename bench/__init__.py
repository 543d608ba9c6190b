"""Benchmarks: `make bench` (the local stack end to end) and smaller in-process measurements."""
