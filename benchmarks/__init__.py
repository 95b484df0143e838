"""Benchmarks of jaxnas: step throughput, compile time, memory (run as modules)."""
