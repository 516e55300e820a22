"""Balanced assignment of points to codes by Sinkhorn-Knopp (LC-Rec's "uniform semantic mapping").

Nearest-code assignment lets many points pile onto one code. Sinkhorn instead finds the
entropy-regularised transport plan ``Q`` between the points (mass 1/B each) and the codes (mass
1/V each) that minimises ``<Q, cost> - eps * H(Q)``; the argmax of each row of ``Q`` is then a
near-balanced assignment that still prefers close codes. The cost (a distance matrix) is first
rescaled to [-1, 1] as in LC-Rec, so ``eps`` (default 0.003, LC-Rec's value) means the same for any
distance scale. The iterations run in log space, so a small ``eps`` cannot overflow.
"""

from __future__ import annotations

import torch

__all__ = ["sinkhorn_plan", "sinkhorn_assign"]


def sinkhorn_plan(cost: torch.Tensor, epsilon: float = 0.003, iterations: int = 50) -> torch.Tensor:
    """Log of the balanced transport plan [B, V] for a cost matrix [B, V] (smaller cost = closer)."""
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"sinkhorn needs a non-empty [points, codes] cost matrix, got shape {tuple(cost.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn needs epsilon > 0 and iterations >= 1, got {epsilon}, {iterations}")
    cost = cost.float()
    low, high = cost.min(), cost.max()
    middle = (high + low) / 2
    scaled = (cost - middle) / ((high - middle) + 1e-5)
    log_q = -scaled / epsilon
    B, V = cost.shape
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - torch.log(torch.tensor(float(V)))
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - torch.log(torch.tensor(float(B)))
    return log_q


def sinkhorn_assign(cost: torch.Tensor, epsilon: float = 0.003, iterations: int = 50) -> torch.Tensor:
    """Code per point [B] (int64): the argmax of each row of the Sinkhorn plan."""
    return sinkhorn_plan(cost, epsilon, iterations).argmax(dim=1)
