"""Discrete (stand-alone) networks built from a genotype, for retraining and counting."""
