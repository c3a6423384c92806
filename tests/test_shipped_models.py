"""The ONNX models shipped in the package: small, self-describing, accepted by the processor."""

import numpy as np
import pytest

from svjscout.models import shipped_model
from svjscout.models.export import read_metadata
from svjscout.processors.features import EVENT_FEATURES
from svjscout.processors.inference import LundNetScorer, TwinScorer
from svjscout.processors.lund import LUND_FEATURES


def test_shipped_models_metadata_and_size():
    for name, kind, features in (("lundnet", "lundnet", list(LUND_FEATURES)), ("twin", "twin", list(EVENT_FEATURES))):
        path = shipped_model(name)
        assert path.exists(), path
        assert path.stat().st_size < 5e6
        meta = read_metadata(path)
        assert meta["model"] == kind
        assert meta["features"] == features
        assert meta["version"] and meta["training"]
        assert "all" in meta["auc"] or "x" in str(meta["auc"])


def test_shipped_models_run_in_the_processor_scorers():
    rng = np.random.default_rng(0)
    lund = LundNetScorer(shipped_model("lundnet"), tuple(LUND_FEATURES))
    n, L = 64, 32
    x = rng.normal(0, 1, (n, L, 5)).astype(np.float32)
    mask = np.zeros((n, L), bool)
    for i in range(n):
        mask[i, : rng.integers(1, L)] = True
    s = lund(x, mask)
    assert s.shape == (n,) and np.all((s >= 0) & (s <= 1)) and np.std(s) > 0
    # padding beyond the mask does not change a jet's score
    x2 = x.copy()
    x2[~mask] = 123.0
    assert np.allclose(lund(x2, mask), s, atol=1e-6)
    twin = TwinScorer(shipped_model("twin"), EVENT_FEATURES)
    feats = np.abs(rng.normal(0.3, 0.2, (n, 12))).astype(np.float32)
    xs, ys = twin(feats)
    assert xs.shape == ys.shape == (n,) and np.all((xs >= 0) & (xs <= 1))


def test_lundnet_scores_do_not_depend_on_batch_trimming():
    """The scorer cuts each batch to its longest jet: scores equal the untrimmed session's."""
    from svjscout.processors.inference import session

    rng = np.random.default_rng(1)
    n, L = 50, 32
    x = rng.normal(0, 1, (n, L, 5)).astype(np.float32)
    mask = np.zeros((n, L), bool)
    for i in range(n):
        mask[i, : rng.integers(1, 12)] = True
    sess, _ = session(shipped_model("lundnet"))
    full = sess.run(["score"], {"lund": x, "mask": mask.astype(np.float32)})[0]
    trimmed = LundNetScorer(shipped_model("lundnet"), tuple(LUND_FEATURES))(x, mask)
    assert np.allclose(full, trimmed, atol=1e-6)


@pytest.mark.slow
def test_shipped_twin_separates_and_fills_every_region_on_the_embedded_sample():
    """Out of sample (the embedded files have other seeds than the training sample), through the
    processor: both scores separate signal from background, and the background populates both
    sides of each cut (the collapsed Y of the first shipped pair sat entirely above 0.5)."""
    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    cfg = load_job(None, {"executor.name": "iterative", "executor.chunksize": 100000})
    out, _ = run_processor(cfg)
    h = out["hists"]["xy_mt"]
    kinds = {name: spec.kind for name, spec in cfg.datasets.items()}

    def plane(kind):
        return sum(h[{"dataset": d}].project("x", "y").values() for d, k in kinds.items() if k == kind)

    bkg, sig = plane("background"), plane("signal")
    centres = h.axes["x"].centers

    def auc(s, b):  # weighted AUC of a binned score: P(score_sig > score_bkg) + ties / 2
        s, b = s / s.sum(), b / b.sum()
        return float(np.sum(s * (np.cumsum(b) - b)) + 0.5 * np.sum(s * b))

    for axis in (0, 1):  # X, Y
        b1, s1 = bkg.sum(axis=1 - axis), sig.sum(axis=1 - axis)
        assert auc(s1, b1) > 0.75, (axis, auc(s1, b1))
        below = b1[centres < 0.5].sum() / b1.sum()
        assert 0.05 < below < 0.98, (axis, below)
