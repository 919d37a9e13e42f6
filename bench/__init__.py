"""Benchmarks (never collected by pytest: its testpaths is tests/). See bench/README.md."""
