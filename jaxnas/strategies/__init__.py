"""Search strategies: the bilevel core and its methods, one-shot sampling, evolution."""
