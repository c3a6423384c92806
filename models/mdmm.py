"""Modified differential method of multipliers (MDMM, Platt & Barr 1988) for inequality constraints.

Each constraint ``L_j <= eps_j`` gets a slack ``s_j`` and a multiplier ``lambda_j``:
``phi_j = eps_j - L_j - s_j^2`` and the total loss is

    primary + sum_j alpha_j (-lambda_j phi_j + rho_j / 2 phi_j^2).

Model parameters and slacks follow gradient *descent* on this loss, the multipliers gradient
*ascent*: a hook negates the multipliers' gradients, so one ordinary optimizer over
``list(model.parameters()) + list(mdmm.parameters())`` does both. At a solution with an active
constraint ``phi_j = 0`` and ``alpha_j lambda_j`` is the usual Lagrange multiplier.

This is our own small module (not the PyPI ``mdmm`` package).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["Constraint", "MDMM", "MDMMOutput"]


@dataclass(frozen=True)
class Constraint:
    """One inequality constraint ``L <= eps``.

    Attributes:
        name: key of the constraint value passed to :meth:`MDMM.forward`.
        eps: the bound (unit of the constrained quantity).
        alpha: scale of the constraint term in the loss.
        rho: damping strength (quadratic penalty on ``phi``).
    """

    name: str
    eps: float
    alpha: float = 1.0
    rho: float = 1.0


@dataclass
class MDMMOutput:
    """Result of :meth:`MDMM.forward`.

    Attributes:
        loss: 0-d tensor, primary + constraint terms (what to backpropagate).
        primary: 0-d tensor, the primary objective.
        values: name -> 0-d tensor constraint value L_j.
        phis: name -> 0-d tensor phi_j = eps_j - L_j - s_j^2.
    """

    loss: torch.Tensor
    primary: torch.Tensor
    values: dict[str, torch.Tensor]
    phis: dict[str, torch.Tensor]


class MDMM(nn.Module):
    """Constraint terms of the MDMM loss with learnable slacks and multipliers.

    Args:
        constraints: the constraints, in a fixed order.
        lambda_init: initial multiplier value (default 0).

    Parameters: ``lambdas`` (k,) multipliers (ascent) and ``slacks`` (k,) (descent), initialised
    to ``sqrt(eps)`` so that an already-satisfied constraint starts near ``phi = 0`` and is not
    stuck at the ``s = 0`` saddle.
    """

    def __init__(self, constraints: Sequence[Constraint], lambda_init: float = 0.0):
        super().__init__()
        names = [c.name for c in constraints]
        if len(set(names)) != len(names):
            raise ValueError(f"MDMM: duplicate constraint names in {names}")
        self.constraints = list(constraints)
        k = len(self.constraints)
        self.lambdas = nn.Parameter(torch.full((k,), float(lambda_init), dtype=torch.float64))
        self.slacks = nn.Parameter(
            torch.tensor([math.sqrt(max(c.eps, 0.0)) for c in self.constraints], dtype=torch.float64)
        )
        self.lambdas.register_hook(lambda g: -g)  # gradient ascent on the multipliers
        self.register_buffer("_eps", torch.tensor([c.eps for c in self.constraints], dtype=torch.float64))
        self.register_buffer("_alpha", torch.tensor([c.alpha for c in self.constraints], dtype=torch.float64))
        self.register_buffer("_rho", torch.tensor([c.rho for c in self.constraints], dtype=torch.float64))
        self.last_values: dict[str, float] = {}
        self.last_phis: dict[str, float] = {}

    @property
    def names(self) -> list[str]:
        """Constraint names in order."""
        return [c.name for c in self.constraints]

    def forward(self, primary: torch.Tensor, values: Mapping[str, torch.Tensor]) -> MDMMOutput:
        """Total MDMM loss.

        Args:
            primary: 0-d tensor, the objective to minimise.
            values: name -> 0-d tensor L_j for every constraint (extra keys are ignored).

        Returns:
            :class:`MDMMOutput`; the last values and phis are also kept for logging.
        """
        missing = [n for n in self.names if n not in values]
        if missing:
            raise KeyError(f"MDMM: constraint values missing for {missing}")
        vals = torch.stack([values[n].to(torch.float64).reshape(()) for n in self.names])
        phi = self._eps - vals - self.slacks**2
        terms = self._alpha * (-self.lambdas * phi + 0.5 * self._rho * phi**2)
        loss = primary + terms.sum().to(primary.dtype)
        self.last_values = {n: float(v) for n, v in zip(self.names, vals.detach().tolist())}
        self.last_phis = {n: float(v) for n, v in zip(self.names, phi.detach().tolist())}
        return MDMMOutput(
            loss=loss,
            primary=primary,
            values={n: values[n] for n in self.names},
            phis={n: phi[i] for i, n in enumerate(self.names)},
        )

    def multipliers(self) -> dict[str, float]:
        """name -> current lambda_j."""
        return {n: float(v) for n, v in zip(self.names, self.lambdas.detach().tolist())}

    def summary(self) -> dict[str, dict[str, float]]:
        """name -> {eps, alpha, rho, lambda, slack, value, phi} for logs and reports."""
        out = {}
        for i, c in enumerate(self.constraints):
            out[c.name] = {
                "eps": c.eps,
                "alpha": c.alpha,
                "rho": c.rho,
                "lambda": float(self.lambdas.detach()[i]),
                "slack": float(self.slacks.detach()[i]),
                "value": self.last_values.get(c.name, float("nan")),
                "phi": self.last_phis.get(c.name, float("nan")),
            }
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """Constraint definitions and last values, stored in :meth:`state_dict`."""
        return {
            "constraints": [asdict(c) for c in self.constraints],
            "last_values": dict(self.last_values),
            "last_phis": dict(self.last_phis),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the last values; refuse a checkpoint with other constraints (names them)."""
        names = [c["name"] for c in state.get("constraints", [])]
        if names != self.names:
            raise ValueError(f"MDMM checkpoint has constraints {names}, this MDMM has {self.names}")
        self.last_values = dict(state.get("last_values", {}))
        self.last_phis = dict(state.get("last_phis", {}))
