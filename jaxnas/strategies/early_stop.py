"""Early stopping of a bilevel search (an option of every gradient-based method), checked
at each evaluation (once per epoch by default) on the host:

* DARTS+ (Liang et al. 2019): stop once the derived normal cell has at least `max_skips`
  skip-connects (paper: 2), or once the ranking of every edge's op weights has not
  changed for `stable_epochs` evaluations in a row;
* RobustDARTS (Zela et al. 2020, DARTS-ES): stop once the dominant eigenvalue of the
  architecture Hessian has grown fast: lambda[i - k] / lambda[i] < `eigen_ratio` (paper:
  0.75), k = `eigen_epochs` evaluations back (without the paper's smoothing window).

Pure bookkeeping over numbers: the runner feeds it op weights, the derived genotype's
normal cell and, when the eigenvalue criterion is on, the eigenvalue.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np


def count_skips(normal: Sequence[tuple[str, int]]) -> int:
    """skip_connect ops in a cell's (op, input) list."""
    return sum(1 for op, _ in normal if op == "skip_connect")


def ranking(weights: Mapping[str, Any]) -> tuple:
    """Each edge's ops in decreasing weight (stable: ties keep op order), per cell."""
    return tuple(tuple(map(tuple, np.argsort(-np.asarray(weights[k]), axis=-1,
                                             kind="stable")))
                 for k in sorted(weights))


class EarlyStop:
    """The criteria that are on (0 turns each off); `update` once per evaluation returns
    the reason to stop, or None. `history` keeps what the ranking/eigen criteria need."""

    def __init__(self, max_skips: int = 0, stable_epochs: int = 0,
                 eigen_ratio: float = 0.0, eigen_epochs: int = 5):
        self.max_skips, self.stable_epochs = max_skips, stable_epochs
        self.eigen_ratio, self.eigen_epochs = eigen_ratio, eigen_epochs
        self._last_ranking: Optional[tuple] = None
        self._stable = 0
        self.eigenvalues: list[float] = []

    def to_json(self) -> dict[str, Any]:
        """The history `update` reads (for a checkpoint's JSON meta)."""
        return {"last_ranking": (None if self._last_ranking is None else
                                 [[list(map(int, e)) for e in c]
                                  for c in self._last_ranking]),
                "stable": self._stable, "eigenvalues": list(self.eigenvalues)}

    def load(self, saved: Mapping[str, Any]) -> None:
        """Continues from `to_json`'s record: later updates match an uninterrupted run."""
        last = saved["last_ranking"]
        self._last_ranking = (None if last is None else
                              tuple(tuple(tuple(e) for e in c) for c in last))
        self._stable = int(saved["stable"])
        self.eigenvalues = [float(v) for v in saved["eigenvalues"]]

    @property
    def needs_eigenvalue(self) -> bool:
        return self.eigen_ratio > 0

    def update(self, weights: Mapping[str, Any], normal: Sequence[tuple[str, int]],
               eigenvalue: Optional[float] = None) -> Optional[str]:
        reasons = []
        if self.max_skips and count_skips(normal) >= self.max_skips:
            reasons.append(f"the normal cell has {count_skips(normal)} skip-connects "
                           f"(>= {self.max_skips}, DARTS+)")
        rank = ranking(weights)
        self._stable = self._stable + 1 if rank == self._last_ranking else 0
        self._last_ranking = rank
        if self.stable_epochs and self._stable >= self.stable_epochs:
            reasons.append(f"the op ranking has not changed for {self._stable} "
                           "evaluations (DARTS+)")
        if self.needs_eigenvalue:
            if eigenvalue is None:
                raise ValueError("the eigenvalue criterion is on: pass the eigenvalue")
            self.eigenvalues.append(float(eigenvalue))
            k = self.eigen_epochs
            if len(self.eigenvalues) > k:
                old, new = self.eigenvalues[-1 - k], self.eigenvalues[-1]
                if new > 0 and old / new < self.eigen_ratio:
                    reasons.append(f"the dominant arch-Hessian eigenvalue grew from "
                                   f"{old:.4g} to {new:.4g} in {k} evaluations (ratio "
                                   f"{old / new:.3f} < {self.eigen_ratio}, RobustDARTS)")
        return "; ".join(reasons) or None
