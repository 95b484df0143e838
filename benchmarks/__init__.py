"""Benchmarks of jaxnas: step throughput, compile time, memory and FLOPs.

Run as `jaxnas bench ...` or `python -m benchmarks ...` (`benchmarks.runner`).
"""
