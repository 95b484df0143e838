"""Search spaces: candidate ops, cell topologies and genotypes (no optimisers here)."""
