"""LundNet: a jet tagger on the primary Lund plane (Dreyer & Qu, arXiv:2012.08526), and its ONNX export.

The primary Lund plane of a jet is a chain graph: node ``i`` (the i-th declustering, widest
angle first) is linked to nodes ``i - 1`` and ``i + 1``. Jets come padded to a common length
``L`` (:func:`svjscout.processors.lund.pad_lund`), real nodes first, with a mask.

Architecture (per jet; ``B`` jets, ``L`` nodes, ``F`` node features):

1. input normalisation ``(x - mean) / std`` with stored buffers (set from the training set
   over real nodes only, :meth:`LundNet.set_normalisation`), padded nodes zeroed;
2. EdgeConv blocks on the chain. For the edge ``i <- j`` the message is an MLP whose first
   layer is ``theta(x_j - x_i) + phi(x_i)`` (i.e. a linear layer on ``[x_i, x_j - x_i]``),
   followed by further ``Linear -> masked BatchNorm -> ReLU`` layers; messages are averaged
   over the (up to two) real chain neighbours; a shortcut (linear + BN, or identity when the
   width does not change) is added, then ReLU. Neighbours are shifted tensors (pad + slice),
   so there is no gather and the graph exports to plain ONNX ops;
3. fusion: the concatenated outputs of all blocks -> ``Linear -> BN -> ReLU``;
4. masked global average over real nodes;
5. head: ``Linear -> ReLU -> Dropout -> Linear(1)``: one logit per jet; :meth:`LundNet.predict`
   gives the sigmoid.

Batch normalisation is masked (statistics over real nodes only), so in evaluation mode the
network output of a jet is independent of the padding length and of the other jets.

Sizes: :data:`SMALL` (default; 3 blocks 32, 32, 64, fusion 128, head 64) and
:data:`REFERENCE` (the published LundNet: 6 blocks 32, 32, 64, 64, 128, 128, fusion 384,
head 256, dropout 0.1, ~0.4 M parameters). ``features=LUND3_FEATURES`` gives LundNet-3.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from svjscout.core.features import LUND_FEATURES
from svjscout.models.export import write_metadata

log = logging.getLogger(__name__)

#: LundNet-3 node features (ln kt, ln Delta, ln z).
LUND3_FEATURES = ("ln_kt", "ln_delta", "ln_z")

#: ONNX input / output names.
ONNX_INPUTS = ("lund", "mask")
ONNX_OUTPUT = "score"
ONNX_OPSET = 17


@dataclass(frozen=True)
class LundNetConfig:
    """Size and inputs of a LundNet.

    Attributes:
        block_widths: output width of each EdgeConv block (one block per entry).
        layers_per_block: number of ``Linear -> BN -> ReLU`` layers of each message MLP.
        fusion: width of the fusion layer over the concatenated block outputs.
        head: width of the hidden layer of the classification head.
        dropout: dropout probability in the head.
        features: node feature names, in input order (a subset of ``LUND_FEATURES``).
        max_len: number of nodes per jet the model is trained / served with (metadata only:
            the network accepts any length).
    """

    block_widths: tuple[int, ...] = (32, 32, 64)
    layers_per_block: int = 2
    fusion: int = 128
    head: int = 64
    dropout: float = 0.1
    features: tuple[str, ...] = LUND_FEATURES
    max_len: int = 32

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LundNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"LundNetConfig: unknown keys {unknown}, expected a subset of {sorted(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)


#: Default, inference-cheap configuration.
SMALL = LundNetConfig()
#: The published LundNet size.
REFERENCE = LundNetConfig(block_widths=(32, 32, 64, 64, 128, 128), fusion=384, head=256)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the real nodes only.

    Training: statistics over all real nodes of the batch; running averages updated.
    Evaluation: the running statistics, i.e. a per-channel affine map (exact in ONNX).

    Shapes: ``x`` (B, L, C), ``mask`` (B, L, 1) float (1 real, 0 pad) -> (B, L, C).
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        #: True once folded into the preceding linear layer (see :func:`fold_batchnorm`).
        self.folded = False

    @torch.no_grad()
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluation-mode ``(scale, shift)`` with ``bn(x) = x * scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return x
        if self.training:
            n = mask.sum().clamp(min=1.0)
            mean = (x * mask).sum(dim=(0, 1)) / n
            var = (((x - mean) * mask) ** 2).sum(dim=(0, 1)) / n
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def _shift_prev(t: torch.Tensor) -> torch.Tensor:
    """(B, L, C) -> (B, L, C) with out[:, i] = t[:, i - 1] and out[:, 0] = 0."""
    return torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], dim=1)


def _shift_next(t: torch.Tensor) -> torch.Tensor:
    """(B, L, C) -> (B, L, C) with out[:, i] = t[:, i + 1] and out[:, L - 1] = 0."""
    return torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)


class ChainEdgeConv(nn.Module):
    """One EdgeConv block on the chain graph of the primary Lund plane.

    Shapes: ``x`` (B, L, C_in), ``mask`` (B, L, 1) float -> (B, L, C_out), zero on padding.
    """

    def __init__(self, c_in: int, c_out: int, layers: int) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"ChainEdgeConv: layers is {layers}, expected >= 1")
        self.theta = nn.Linear(c_in, c_out, bias=False)  # acts on x_j - x_i
        self.phi = nn.Linear(c_in, c_out)  # acts on x_i
        self.bn = nn.ModuleList([MaskedBatchNorm(c_out) for _ in range(layers)])
        self.lin = nn.ModuleList([nn.Linear(c_out, c_out) for _ in range(layers - 1)])
        if c_in == c_out:
            self.shortcut = None
            self.shortcut_bn = None
        else:
            self.shortcut = nn.Linear(c_in, c_out)
            self.shortcut_bn = MaskedBatchNorm(c_out)

    def _message(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn[0](h, mask))
        for lin, bn in zip(self.lin, self.bn[1:]):
            h = torch.relu(bn(lin(h), mask))
        return h

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # neighbours as shifted tensors: prev[i] = x[i-1], next[i] = x[i+1] (zero beyond the ends)
        m_prev, m_next = _shift_prev(mask) * mask, _shift_next(mask) * mask
        # theta is linear without bias: theta(x_j - x_i) = theta(x_j) - theta(x_i), so theta is
        # applied once per node and the neighbour terms are shifted (at the chain ends the
        # shifted term is 0 and the edge is masked out)
        t = self.theta(x)
        self_term = self.phi(x) - t
        h_prev = self._message(_shift_prev(t) + self_term, m_prev)
        h_next = self._message(_shift_next(t) + self_term, m_next)
        agg = (h_prev * m_prev + h_next * m_next) / (m_prev + m_next).clamp(min=1.0)
        if self.shortcut is None:
            short = x
        else:
            short = self.shortcut_bn(self.shortcut(x), mask)
        return torch.relu(agg + short) * mask


class LundNet(nn.Module):
    """LundNet on padded primary Lund planes.

    ``forward(x, mask)``: ``x`` float32 (B, L, F) node features in ``config.features`` order,
    ``mask`` float32 (B, L) (1 real node, 0 padding; real nodes first) -> logits (B,).
    """

    def __init__(self, config: LundNetConfig = SMALL) -> None:
        super().__init__()
        if not config.block_widths:
            raise ValueError("LundNetConfig.block_widths is empty, expected >= 1 block")
        unknown = [f for f in config.features if f not in LUND_FEATURES]
        if unknown:
            raise ValueError(f"LundNetConfig.features: unknown {unknown}, expected names from {LUND_FEATURES}")
        self.config = config
        n_feat = len(config.features)
        self.register_buffer("feat_mean", torch.zeros(n_feat))
        self.register_buffer("feat_std", torch.ones(n_feat))
        blocks, c_in = [], n_feat
        for width in config.block_widths:
            blocks.append(ChainEdgeConv(c_in, width, config.layers_per_block))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.fusion = nn.Linear(sum(config.block_widths), config.fusion)
        self.fusion_bn = MaskedBatchNorm(config.fusion)
        self.head = nn.Sequential(
            nn.Linear(config.fusion, config.head),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.head, 1),
        )

    @torch.no_grad()
    def set_normalisation(self, x: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> None:
        """Store the per-feature mean and std over the real nodes of ``x`` (B, L, F) / ``mask`` (B, L)."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        m = torch.as_tensor(np.asarray(mask)).bool()
        real = x[m]
        if real.shape[0] < 2:
            raise ValueError(f"set_normalisation: {real.shape[0]} real nodes, expected >= 2")
        self.feat_mean.copy_(real.mean(dim=0).float())
        self.feat_std.copy_(real.std(dim=0).clamp(min=1e-6).float())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)
        h = (x - self.feat_mean) / self.feat_std * m
        outs = []
        for block in self.blocks:
            h = block(h, m)
            outs.append(h)
        fused = torch.relu(self.fusion_bn(self.fusion(torch.cat(outs, dim=-1)), m)) * m
        pooled = fused.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)

    @torch.no_grad()
    def predict(self, x: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                batch_size: int = 4096) -> np.ndarray:
        """Sigmoid scores float32 (B,) in evaluation mode (the model's mode is restored)."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        mask = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        out = [torch.sigmoid(self(x[i : i + batch_size], mask[i : i + batch_size]))
               for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def _fold_into(bn: MaskedBatchNorm, *linears: nn.Linear) -> None:
    """Fold ``bn`` (evaluation mode) into the linear layer(s) whose summed output it normalises.

    The bias is absorbed by the last layer that has one.
    """
    scale, shift = bn.affine()
    biased = [lin for lin in linears if lin.bias is not None]
    if not biased:
        raise ValueError("fold_batchnorm: no linear layer with a bias to absorb the shift")
    for lin in linears:
        lin.weight.mul_(scale[:, None])
    for lin in biased[:-1]:
        lin.bias.mul_(scale)
    biased[-1].bias.mul_(scale).add_(shift)
    bn.folded = True


@torch.no_grad()
def fold_batchnorm(model: LundNet) -> LundNet:
    """An evaluation-mode copy of ``model`` with every batch normalisation folded into the
    preceding linear layer (same outputs up to float rounding, fewer ONNX ops)."""
    folded = copy.deepcopy(model).eval()
    for block in folded.blocks:
        _fold_into(block.bn[0], block.theta, block.phi)
        for lin, bn in zip(block.lin, block.bn[1:]):
            _fold_into(bn, lin)
        if block.shortcut is not None:
            _fold_into(block.shortcut_bn, block.shortcut)
    _fold_into(folded.fusion_bn, folded.fusion)
    return folded


class _ScoreWrapper(nn.Module):
    """ONNX graph: (lund, mask) -> sigmoid score (N,)."""

    def __init__(self, model: LundNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, lund: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(lund, mask))


def _check_jets(n_jets: int, n_feat: int, max_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random jets (realistic ranges, variable lengths, some empty) for the export check."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, n_jets)
    mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.float32)
    x = rng.normal(0.0, 1.5, (n_jets, max_len, n_feat)).astype(np.float32) * mask[..., None]
    return x, mask


def export_lundnet_onnx(
    model: LundNet,
    path: str | Path,
    features: Sequence[str],
    training_summary: dict[str, Any],
    auc: dict[str, Any],
    tolerance: float = 1e-5,
) -> Path:
    """Export ``model`` to ONNX with self-describing metadata and check it against torch.

    Batch normalisations are folded into the linear layers first (:func:`fold_batchnorm`);
    the check compares onnxruntime with the unfolded torch model.

    The graph has inputs ``lund`` float32 (N, L, n_feat) and ``mask`` float32 (N, L) (dynamic
    N and L) and output ``score`` float32 (N,) = sigmoid(logit). Metadata (see
    :mod:`svjscout.models.export`): ``features`` (JSON list), ``model="lundnet"``, ``version``,
    ``training`` (JSON), ``auc`` (JSON, per signal point and ``"all"``), ``max_len``, ``config``.

    Args:
        model: a trained :class:`LundNet` (exported in evaluation mode; its mode is restored).
        path: output file; its name must contain ``"lundnet"``.
        features: node feature names in input order; must equal ``model.config.features``.
        training_summary: JSON-serialisable summary of the training.
        auc: JSON-serialisable test AUCs.
        tolerance: maximum allowed |onnxruntime - torch| on 1000 check jets.

    Returns:
        The path written.

    Raises:
        ValueError: the file name lacks "lundnet", or ``features`` disagrees with the model.
        RuntimeError: onnxruntime and torch disagree by more than ``tolerance``.
    """
    path = Path(path)
    if "lundnet" not in path.name:
        raise ValueError(f"export_lundnet_onnx: file name {path.name!r} must contain 'lundnet'")
    if tuple(features) != tuple(model.config.features):
        raise ValueError(
            f"export_lundnet_onnx: features {list(features)} differ from the model's {list(model.config.features)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    wrapper = _ScoreWrapper(fold_batchnorm(model)).eval()
    n_feat, max_len = len(features), int(model.config.max_len)
    dummy = (torch.zeros(2, max_len, n_feat), torch.ones(2, max_len))
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript (not a dependency); its deprecation notices are not actionable here
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            wrapper,
            dummy,
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=[ONNX_OUTPUT],
            dynamic_axes={"lund": {0: "N", 1: "L"}, "mask": {0: "N", 1: "L"}, "score": {0: "N"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    write_metadata(
        path,
        {
            "features": list(features),
            "model": "lundnet",
            "training": training_summary,
            "auc": auc,
            "max_len": str(max_len),
            "config": json.dumps(model.config.to_dict(), sort_keys=True),
        },
    )
    # agreement check: onnxruntime vs the (unfolded) torch model on 1000 jets
    sess = load_lundnet_session(path)
    x, mask = _check_jets(1000, n_feat, max_len)
    got = sess.run([ONNX_OUTPUT], {"lund": x, "mask": mask})[0]
    with torch.inference_mode():
        ref = torch.sigmoid(model(torch.from_numpy(x), torch.from_numpy(mask))).numpy()
    worst = float(np.max(np.abs(got - ref)))
    model.train(was_training)
    if not np.isfinite(worst) or worst > tolerance:
        raise RuntimeError(
            f"export_lundnet_onnx: {path}: onnxruntime differs from torch by {worst:.3g} > {tolerance:g} on 1000 jets"
        )
    log.info("exported %s (max |onnx - torch| = %.2g)", path, worst)
    return path


def load_lundnet_session(path: str | Path, threads: int = 1):
    """An onnxruntime session on a LundNet ONNX file (``threads`` intra-op threads)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
