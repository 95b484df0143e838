"""Search loops, one module per method family (imported lazily by jaxnas.search)."""
