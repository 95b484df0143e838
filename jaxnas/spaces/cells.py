"""Static topology of a DARTS cell: which states feed which nodes, and edge numbering."""

from __future__ import annotations

import functools


def num_edges(steps: int = 4) -> int:
    """Edges of a cell with `steps` intermediate nodes (node j has 2 + j inputs): 14 for 4."""
    return sum(2 + j for j in range(steps))


@functools.lru_cache(maxsize=None)
def edge_index(source: int, node: int) -> int:
    """Row of the architecture matrix for the edge from state `source` into `node`.

    States 0 and 1 are the cell inputs; state 2 + j is intermediate node j. Rows are
    ordered node by node and, within a node, by source, exactly as DARTS orders alphas.
    """
    if not 0 <= source < node + 2:
        raise ValueError(f"state {source} does not feed node {node} (allowed 0..{node + 1})")
    return sum(2 + j for j in range(node)) + source


def fan_out(source: int, steps: int = 4) -> tuple[int, ...]:
    """The intermediate nodes that state `source` feeds (all later nodes)."""
    return tuple(range(max(0, source - 1), steps))


def reduction_layers(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells of a DARTS network (at 1/3 and 2/3 depth)."""
    return (layers // 3, 2 * layers // 3)
