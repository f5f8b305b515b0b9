"""Benchmarks of spice-env: evaluation suites and performance measurements."""
