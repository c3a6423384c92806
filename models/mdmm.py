"""Modified differential method of multipliers (MDMM, Platt & Barr 1988) for inequality constraints.

Each constraint ``L_j <= eps_j`` gets a slack ``s_j`` and a multiplier ``lambda_j``:
``phi_j = eps_j - L_j - s_j^2`` and the total loss is

    primary + sum_j alpha_j (-lambda_j phi_j + rho_j / 2 phi_j^2).

Model parameters and slacks follow gradient *descent* on this loss, the multipliers gradient
*ascent*: a hook negates the multipliers' gradients, so one ordinary optimizer over
``list(model.parameters()) + list(mdmm.parameters())`` does both. At a solution with an active
constraint ``phi_j = 0`` and ``alpha_j lambda_j`` is the usual Lagrange multiplier.

Multipliers are kept >= 0 (``projection="clamp"``, the default): projected dual ascent,

    lambda_j <- max(0, lambda_j + eta * alpha_j * (L_j + s_j^2 - eps_j))    (Adam's step in place of eta * grad)

i.e. the optimizer's ascent step followed by ``lambda_j = max(lambda_j, 0)``
(:meth:`MDMM.project`; :meth:`MDMM.attach` registers it as a post-step hook of the optimizer, so
it runs after *every* step). The loss also reads ``max(lambda_j, 0)``, so a multiplier can never
act with the wrong sign even between a step and its projection. Why: the gradient of the
constraint term with respect to ``L_j`` is ``alpha_j (lambda_j - rho_j phi_j)``. For an inequality
constraint the multiplier of the Lagrangian is >= 0 (KKT); an unprojected ascent drives it
negative while the constraint is slack (``phi_j > 0`` makes the ascent step negative), and once
``lambda_j < rho_j phi_j`` with the constraint violated again the coefficient is negative: the
loss *rewards* a larger ``L_j`` (the shipped twin ended with lambda = -0.54 for dCorr(Y, |deta|),
issue 29). With ``lambda_j >= 0`` and a violated constraint (``L_j > eps_j``, so ``phi_j < 0``)
the coefficient is ``>= alpha_j rho_j |phi_j| > 0``: the constraint's gradient always points
back to the feasible side. (While the constraint is slack, the damping term pulls ``L_j`` towards
``eps_j - s_j^2 <= eps_j``, never beyond ``eps_j``; the slack absorbs the gap.)
``projection="none"`` is the old, unprojected update (to reproduce models trained before it).
A checkpoint loaded into a clamped MDMM is projected too (an old one with negative multipliers
is clamped, with a warning naming them).

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

__all__ = ["Constraint", "MDMM", "MDMMOutput", "PROJECTIONS"]

#: Update rules of the multipliers: ``clamp`` (projected dual ascent, lambda >= 0) or ``none``.
PROJECTIONS = ("clamp", "none")


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
        lambda_init: initial multiplier value (default 0; >= 0 with ``projection="clamp"``).
        projection: ``clamp`` (multipliers kept >= 0 after every step, module docstring) or
            ``none`` (the unprojected update of models trained before issue 29).

    Parameters: ``lambdas`` (k,) multipliers (ascent) and ``slacks`` (k,) (descent), initialised
    to ``sqrt(eps)`` so that an already-satisfied constraint starts near ``phi = 0`` and is not
    stuck at the ``s = 0`` saddle.
    """

    def __init__(self, constraints: Sequence[Constraint], lambda_init: float = 0.0, projection: str = "clamp"):
        super().__init__()
        names = [c.name for c in constraints]
        if len(set(names)) != len(names):
            raise ValueError(f"MDMM: duplicate constraint names in {names}")
        if projection not in PROJECTIONS:
            raise ValueError(f"MDMM: projection is {projection!r}, expected one of {list(PROJECTIONS)}")
        if projection == "clamp" and lambda_init < 0:
            raise ValueError(f"MDMM: lambda_init is {lambda_init}, expected >= 0 with projection 'clamp'")
        self.projection = projection
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
        self.register_load_state_dict_post_hook(lambda module, _keys: module._project_loaded())

    @property
    def clamped(self) -> bool:
        """True when the multipliers are kept >= 0."""
        return self.projection == "clamp"

    def project(self) -> list[str]:
        """Clamp the multipliers to >= 0 in place (``projection="clamp"``; no-op for ``none``).

        Returns:
            names of the constraints whose multiplier was negative (and is now 0).
        """
        if not self.clamped:
            return []
        with torch.no_grad():
            neg = self.lambdas < 0
            if bool(neg.any()):
                self.lambdas.clamp_(min=0.0)
        return [n for n, b in zip(self.names, neg.tolist()) if b]

    def attach(self, optimizer: torch.optim.Optimizer):
        """Project after every ``optimizer.step()`` (a post-step hook); returns the hook handle."""
        return optimizer.register_step_post_hook(lambda *_args, **_kw: self.project())

    def _project_loaded(self) -> None:
        neg = self.project()
        if neg:
            log.warning("MDMM: the loaded state has negative multipliers for %s; clamped to 0 "
                        "(projection 'clamp')", neg)

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
        lam = self.lambdas.clamp_min(0.0) if self.clamped else self.lambdas  # gradient passes at 0
        terms = self._alpha * (-lam * phi + 0.5 * self._rho * phi**2)
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
            "projection": self.projection,
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
