"""Benchmarks behind BENCHMARKS.md (run each script with ``--help``)."""
