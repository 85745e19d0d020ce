"""Benchmarks, run by `python -m bench` (not by the test suite)."""
