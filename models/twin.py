"""The twin MLPs X and Y (event tagger, 3D ABCDisCoTEC) and their ONNX export.

Two independent MLPs read the same 12 event features (:data:`EVENT_FEATURES`, raw units: GeV,
radians, dimensionless scores); the standardisation ``(f - mean) / std`` lives inside the model
as buffers, so the ONNX graph takes raw features. Outputs are sigmoid scores in [0, 1].
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from svjscout.core.features import EVENT_FEATURES
from svjscout.models.export import file_sha256, read_metadata, write_metadata

log = logging.getLogger(__name__)

__all__ = ["TwinMLP", "export_twin_onnx", "ACTIVATIONS"]

#: Activation name -> torch module class.
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _mlp(n_in: int, hidden: Sequence[int], activation: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class TwinMLP(nn.Module):
    """Two independent MLPs X and Y on the same standardised inputs.

    Args:
        n_features: number of inputs (12).
        hidden: hidden layer widths of each MLP.
        activation: one of :data:`ACTIVATIONS`.
        dropout: dropout probability after each hidden activation (0 = none).

    Buffers ``mean`` and ``std`` (n_features,) hold the standardisation; set them with
    :meth:`set_standardisation` from the training data.
    """

    def __init__(
        self,
        n_features: int = len(EVENT_FEATURES),
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "silu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"TwinMLP: activation {activation!r} not in {sorted(ACTIVATIONS)}")
        self.n_features = n_features
        self.hparams = {"n_features": n_features, "hidden": list(hidden), "activation": activation,
                        "dropout": dropout}
        self.net_x = _mlp(n_features, hidden, activation, dropout)
        self.net_y = _mlp(n_features, hidden, activation, dropout)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set_standardisation(self, features: np.ndarray | torch.Tensor, weights=None) -> None:
        """Set ``mean`` / ``std`` from (N, n_features) raw training features (optionally weighted).

        A feature with zero spread gets std 1.
        """
        f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        if f.ndim != 2 or f.shape[1] != self.n_features:
            raise ValueError(f"TwinMLP: features have shape {tuple(f.shape)}, expected (N, {self.n_features})")
        w = torch.ones(f.shape[0], dtype=torch.float64) if weights is None else torch.as_tensor(
            np.asarray(weights), dtype=torch.float64).abs()
        w = w / w.sum()
        mean = w @ f
        std = torch.sqrt(w @ (f - mean) ** 2)
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())

    def logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of X and Y: (N, n_features) raw features -> two (N,) tensors."""
        z = (features - self.mean) / self.std
        return self.net_x(z).squeeze(-1), self.net_y(z).squeeze(-1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores X and Y in [0, 1]: (N, n_features) raw features -> two (N,) tensors."""
        lx, ly = self.logits(features)
        return torch.sigmoid(lx), torch.sigmoid(ly)


def export_twin_onnx(
    model: TwinMLP,
    path: str | Path,
    training_summary: dict[str, Any],
    auc: dict[str, Any] | None = None,
    check_rows: int = 1000,
    opset: int = 17,
) -> Path:
    """Export to one ONNX graph and verify onnxruntime against torch.

    The graph has input ``features`` float32 (N, 12) with dynamic N and outputs ``x`` and ``y``
    float32 (N,). Metadata: ``features`` (:data:`EVENT_FEATURES`), ``model`` = ``"twin"``,
    ``version``, ``training`` (the summary), optional ``auc``.

    Args:
        model: the trained model (standardisation buffers set).
        path: output ``.onnx`` file.
        training_summary: JSON-able summary of the training data and settings.
        auc: optional JSON-able test AUCs.
        check_rows: rows of random raw-scale features used for the torch/onnxruntime check.
        opset: ONNX opset (>= 17).

    Returns:
        The path written.

    Raises:
        RuntimeError: if onnxruntime and torch differ by more than 1e-5 (names the file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    dummy = torch.zeros(2, model.n_features)
    with warnings.catch_warnings():
        # onnxscript (the dynamo exporter) is not a dependency: the TorchScript exporter is used
        # on purpose and its deprecation notices are silenced here only.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["features"],
            output_names=["x", "y"],
            dynamic_axes={"features": {0: "N"}, "x": {0: "N"}, "y": {0: "N"}},
            opset_version=max(int(opset), 17),
            dynamo=False,
        )
    meta: dict[str, Any] = {"features": list(EVENT_FEATURES), "model": "twin", "training": training_summary}
    lundnet = training_summary.get("config", {}).get("lundnet_model") if isinstance(training_summary, dict) else None
    if lundnet and Path(lundnet).is_file():  # the pair: the processor refuses another LundNet
        meta["lundnet"] = lundnet_record(lundnet)
    if auc is not None:
        meta["auc"] = auc
    write_metadata(path, meta)

    gen = torch.Generator().manual_seed(12345)
    rows = model.mean + model.std * torch.randn(check_rows, model.n_features, generator=gen)
    with torch.no_grad():
        tx, ty = model(rows)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ox, oy = sess.run(["x", "y"], {"features": rows.numpy().astype(np.float32)})
    diff = max(float(np.max(np.abs(ox - tx.numpy()))), float(np.max(np.abs(oy - ty.numpy()))))
    if ox.shape != (check_rows,) or oy.shape != (check_rows,) or not diff <= 1e-5:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.3g} (> 1e-5) or has wrong "
                           f"output shapes {ox.shape}, {oy.shape}")
    log.info("exported %s (onnxruntime vs torch max |diff| %.2g); metadata keys %s", path, diff,
             sorted(read_metadata(path)))
    return path


def lundnet_record(path: str | Path) -> dict[str, Any]:
    """What a twin model records of the LundNet its inputs came from: SHA-256, features, max length."""
    meta = read_metadata(path)
    return {"path": str(path), "sha256": file_sha256(path),
            "features": meta.get("features"), "max_len": meta.get("max_len")}
