"""ONNX inference: LundNet on J0 and J1, then the twin MLPs X and Y.

Sessions are created once per worker process and reused for every chunk (:func:`session`,
cached on path and modification time). Threads: one intra-op thread per session by default,
since dask workers already run one task per core; set ``SVJSCOUT_ORT_THREADS`` to change it.
Before any inference, the model's metadata ``features`` are checked against what the processor
computes; a mismatch raises :class:`~svjscout.core.exceptions.ModelMismatchError`.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from svjscout.core.exceptions import ModelMismatchError
from svjscout.core.features import EVENT_FEATURES, LUND_FEATURES
from svjscout.core.modelmeta import check_features, file_sha256, read_metadata

log = logging.getLogger(__name__)

BATCH = 1024


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime: float, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        meta = read_metadata(path)
    except Exception as err:  # noqa: BLE001 - onnxruntime and onnx raise their own types for a bad file
        text = " ".join(str(err).split())[:300]
        raise ModelMismatchError(f"{path}: cannot be opened as an ONNX model ({type(err).__name__}: {text})") from err
    return sess, meta


def session(path: str | Path):
    """(onnxruntime session, metadata) of ``path``, created once per process."""
    path = str(Path(path).resolve())
    if not os.path.exists(path):
        raise ModelMismatchError(f"ONNX model {path} does not exist")
    threads = int(os.environ.get("SVJSCOUT_ORT_THREADS", "1"))
    return _cached(path, os.path.getmtime(path), threads)


class LundNetScorer:
    """Per-jet LundNet score from padded primary Lund sequences.

    The model's ``features`` metadata must be a sequence of names known to the Lund module
    (LundNet-5 or LundNet-3); the columns are taken in the model's order.
    """

    def __init__(self, path: str | Path, known_features: tuple[str, ...], max_len: int | None = None):
        self.path = str(path)
        sess, meta = session(path)
        feats = meta.get("features")
        trained_len = meta.get("max_len")
        if max_len is not None and trained_len is not None and int(trained_len) != int(max_len):
            raise ModelMismatchError(
                f"{path}: metadata key 'max_len' is {trained_len} (the Lund sequence length LundNet was trained "
                f"on), but the job's analysis.lund_max_len is {max_len}")
        if meta.get("model") not in (None, "lundnet"):
            raise ModelMismatchError(f"{path}: metadata key 'model' is {meta.get('model')!r}, expected 'lundnet'")
        if not feats or any(f not in known_features for f in feats):
            raise ModelMismatchError(
                f"{path}: metadata key 'features' is {feats}, expected names from {list(known_features)}"
            )
        self.columns = [known_features.index(f) for f in feats]
        self.meta = meta

    def __call__(self, lund: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Scores (n_jets,) for ``lund`` (n_jets, L, 5) float32 and ``mask`` (n_jets, L)."""
        sess, _ = session(self.path)
        out = np.empty(len(lund), dtype=np.float32)
        x = np.ascontiguousarray(lund[:, :, self.columns], dtype=np.float32)
        m = np.ascontiguousarray(mask, dtype=np.float32)
        for start in range(0, len(x), BATCH):
            sl = slice(start, start + BATCH)
            # real nodes come first: cut the batch to its longest jet (same scores, less work)
            n = max(int(m[sl].sum(axis=1).max(initial=0)), 1)
            out[sl] = sess.run(["score"], {"lund": x[sl, :n], "mask": m[sl, :n]})[0].reshape(-1)
        return out


class TwinScorer:
    """X and Y scores of the twin MLPs; the model must list exactly ``features``."""

    def __init__(self, path: str | Path, features: tuple[str, ...], planes: dict | None = None,
                 lundnet: str | Path | None = None):
        self.path = str(path)
        sess, meta = session(path)
        if meta.get("model") not in (None, "twin"):
            raise ModelMismatchError(f"{path}: metadata key 'model' is {meta.get('model')!r}, expected 'twin'")
        check_features(path, meta, features)
        if planes is not None:
            check_planes(path, meta, planes)
        if lundnet is not None:
            check_pair(path, meta, lundnet)
        self.meta = meta

    def __call__(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) for ``table`` (n_events, 12) float32 raw features."""
        sess, _ = session(self.path)
        x = np.ascontiguousarray(table, dtype=np.float32)
        xs, ys = np.empty(len(x), np.float32), np.empty(len(x), np.float32)
        for start in range(0, len(x), BATCH):
            sl = slice(start, start + BATCH)
            rx, ry = sess.run(["x", "y"], {"features": x[sl]})
            xs[sl], ys[sl] = rx.reshape(-1), ry.reshape(-1)
        return xs, ys


def analysis_planes(cuts) -> dict[str, list[float]]:
    """The |deta| ranges [lo, hi) of the signal and validation planes, from the job's cuts (the one
    source of truth: ``analysis.cuts.sp_deta_max`` and ``deta_max``)."""
    return {"SP": [0.0, float(cuts.sp_deta_max)], "VP": [float(cuts.sp_deta_max), float(cuts.deta_max)]}


def check_planes(path, meta: dict, planes: dict) -> None:
    """Refuse a twin model whose closure constraints were trained on other SP/VP |deta| ranges.

    The ranges are read from the training record (``training.config.planes``); a model without
    one (not trained by svjscout) is not checked.
    """
    trained = ((meta.get("training") or {}).get("config") or {}).get("planes")
    if trained is None:
        return
    want = {k: [float(a) for a in v] for k, v in planes.items()}
    have = {k: [float(a) for a in v] for k, v in trained.items()}
    if any(k not in have or not np.allclose(have[k], v) for k, v in want.items()):
        raise ModelMismatchError(
            f"{path}: metadata key 'training.config.planes' is {have}, but the job's cuts define the planes "
            f"{want} (analysis.cuts.sp_deta_max, deta_max); retrain the twin with the job's planes or change the cuts")


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime: float) -> str:
    return file_sha256(path)  # once per file version and process (every chunk checks the pair)


def check_pair(twin_path, meta: dict, lundnet_path) -> None:
    """Refuse a twin model with another LundNet than the one its LundNet-score inputs came from.

    The twin's training record names its LundNet by content (``lundnet.sha256``, written by
    ``svjscout train twin``); a twin without that record (trained before it existed) is not checked.
    """
    want = (meta.get("lundnet") or {}).get("sha256")
    if not want:
        return
    lundnet_path = str(lundnet_path)
    have = _sha256(lundnet_path, os.path.getmtime(lundnet_path))
    if have != want:
        raise ModelMismatchError(
            f"{twin_path}: metadata key 'lundnet.sha256' is {want[:12]}..., the LundNet it was trained with, "
            f"but {lundnet_path} has SHA-256 {have[:12]}...: use the pair that was trained together")


def check_models(config) -> None:
    """Open and check the job's two models before any data file is read (the runner's preflight).

    Each model is opened in onnxruntime and its metadata checked exactly as the processor will
    (features, model kind, Lund length, SP/VP planes, the LundNet the twin was trained with), then
    scores one event of zeros (the graph's inputs and outputs are those the processor uses).

    Raises:
        ModelMismatchError: naming the config key (``analysis.lundnet_model`` / ``twin_model``), the
            file and what is wrong with it; a model error is never an input file's.
    """
    for key, path in (("analysis.lundnet_model", config.lundnet_model), ("analysis.twin_model", config.twin_model)):
        if path is None:
            continue
        try:
            if key == "analysis.lundnet_model":
                scorer = LundNetScorer(path, tuple(LUND_FEATURES), max_len=config.lund_max_len)
                trial = (np.zeros((1, config.lund_max_len, len(LUND_FEATURES)), np.float32),
                         np.ones((1, config.lund_max_len), bool))
            else:
                scorer = TwinScorer(path, EVENT_FEATURES, planes=analysis_planes(config.cuts),
                                    lundnet=config.lundnet_model)
                trial = (np.zeros((1, len(EVENT_FEATURES)), np.float32),)
        except ModelMismatchError as err:
            raise ModelMismatchError(f"{key}: {err}") from err
        except OSError as err:
            raise ModelMismatchError(f"{key}: {path}: cannot be read ({err})") from err
        try:  # one event through the graph: inputs and outputs as the processor feeds and reads them
            scorer(*trial)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            text = " ".join(str(err).split())[:300]
            raise ModelMismatchError(f"{key}: {path}: opens, but does not score one event of the inputs the "
                                     f"processor gives ({type(err).__name__}: {text})") from err
