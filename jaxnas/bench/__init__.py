"""Benchmarks of jaxnas: step throughput, compile time, memory and FLOPs.

Run as `jaxnas bench ...` or `python -m jaxnas.bench ...` (`jaxnas.bench.runner`);
figures and notes go to the repository's `benchmarks/` folder.
"""
