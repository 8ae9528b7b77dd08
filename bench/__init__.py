"""Benchmarks: each ``bench_<area>.py`` has ``main() -> dict`` reporting ratios against a baseline
measured in the same run. ``python -m bench`` (``make bench``) runs them all into bench/results.md."""
