"""Command-line architectures of any registered space (no JAX imported).

Thin names over the registry (`jaxnas.spaces.base`), kept for their callers.
"""

from __future__ import annotations

from typing import Any

from jaxnas import spaces

Architecture = Any  # a discrete architecture of a registered space


def resolve_architecture(spec: str) -> Architecture:
    """The architecture of a command-line spec (`jaxnas.spaces.from_spec`).

    DARTS genotypes: a known name, a ``Genotype(...)`` literal or a JSON file (see
    `genotypes.resolve`).  Chain genotypes: a JSON file holding a chain genotype, or
    the ``genotype.json`` a SPOS / FairNAS search writes (its ``genotype`` key).
    """
    return spaces.from_spec(spec)


def kind(architecture: Architecture) -> str:
    """The name of the space `architecture` belongs to (``"darts"``, ``"chain"``)."""
    return spaces.space_of(architecture).name


def to_json(architecture: Architecture) -> dict:
    """The architecture as JSON (what result.json and checkpoints record)."""
    return spaces.space_of(architecture).to_json(architecture)


def describe(architecture: Architecture) -> str:
    """A one-line human form: the DARTS string, or the chain's block names."""
    return spaces.space_of(architecture).describe(architecture)
