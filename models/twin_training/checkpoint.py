"""The twin's training checkpoint read back: the model and the MDMM state (``twin_checkpoint.pt``).

Apart from :mod:`.train` (which writes the checkpoint) so that :mod:`.analysis` can start from a
checkpoint and :mod:`.train` can use :mod:`.analysis` without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from svjscout.models.mdmm import MDMM, Constraint
from svjscout.models.twin import TwinMLP
from svjscout.models.twin_training.config import CONSTRAINTS
from svjscout.models.twin_training.losses import _per_name

__all__ = ["load_checkpoint"]


def load_checkpoint(path: str | Path) -> tuple[TwinMLP, MDMM, dict[str, Any]]:
    """Rebuild the model and MDMM state from ``twin_checkpoint.pt``; returns (model, mdmm, checkpoint)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    hp = ckpt["hparams"]
    model = TwinMLP(hp["n_features"], hp["hidden"], hp["activation"], hp["dropout"])
    model.load_state_dict(ckpt["model"])
    cfg = ckpt["config"]
    eps = ckpt.get("eps_used", cfg["eps"])
    mdmm = MDMM([Constraint(n, eps[n], _per_name(cfg["alpha"], n, 1.0), _per_name(cfg["rho"], n, 1.0))
                 for n in CONSTRAINTS])
    mdmm.load_state_dict(ckpt["mdmm"])
    return model, mdmm, ckpt
