"""Benchmarks, each runnable as ``python -m benchmarks.<name> [--json]``; not part of the test run."""
