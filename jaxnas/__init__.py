"""jaxnas: a JAX-native, high-throughput neural architecture search engine."""

__version__ = "0.1.0"
