"""Which search space a genotype on the command line belongs to (no JAX imported)."""

from __future__ import annotations

import json
import os
from typing import Union

from jaxnas.spaces import chain, genotypes

Architecture = Union[genotypes.Genotype, chain.ChainGenotype]


def resolve_architecture(spec: str) -> Architecture:
    """A DARTS `Genotype` or a `chain.ChainGenotype` from a command-line spec.

    DARTS genotypes: a known name, a ``Genotype(...)`` literal or a JSON file (see
    `genotypes.resolve`).  Chain genotypes: a JSON file holding a chain genotype, or
    the ``genotype.json`` a SPOS / FairNAS search writes (its ``genotype`` key).
    """
    if os.path.isfile(spec):
        try:
            with open(spec) as f:
                obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"genotype file {spec}: invalid JSON ({e})") from None
        if chain.is_chain_json(obj):
            try:
                return chain.chain_genotype_from_json(obj)
            except ValueError as e:
                raise ValueError(f"genotype file {spec}: {e}") from None
    return genotypes.resolve(spec)


def kind(architecture: Architecture) -> str:
    """``"darts"`` or ``"chain"``."""
    return "chain" if isinstance(architecture, chain.ChainGenotype) else "darts"


def to_json(architecture: Architecture) -> dict:
    """The architecture as JSON (what result.json and checkpoints record)."""
    if isinstance(architecture, chain.ChainGenotype):
        return architecture.to_json()
    return genotypes.to_json(architecture)


def describe(architecture: Architecture) -> str:
    """A one-line human form: the DARTS string, or the chain's block names."""
    if isinstance(architecture, chain.ChainGenotype):
        return architecture.describe()
    return genotypes.to_str(architecture)
