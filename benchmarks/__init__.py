"""Benchmarks on real data (each script runs on its own: ``python benchmarks/NAME.py``) and
``benchmarks.tables``, which writes the documentation's tables from their results."""
