"""Cross-fitted LundNet scores: k folds by parent, out-of-fold scores (models/lundnet_training/crossfit.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from svjscout.core import splits  # noqa: E402
from svjscout.core.exceptions import ConfigError  # noqa: E402
from svjscout.models.lundnet import LundNetConfig  # noqa: E402
from svjscout.models.lundnet_training.crossfit import CrossFitConfig, crossfit_lundnet, crossfit_skim  # noqa: E402
from svjscout.models.training.metrics import weighted_auc  # noqa: E402

TINY = LundNetConfig(block_widths=(8,), fusion=8, head=4, max_len=8)


def _events(n_parents: int, seed: int, shift: float = 0.8):
    """Parents with 1-3 copies (near-identical jets), two jets per event, a shifted signal class."""
    rng = np.random.default_rng(seed)
    copies = rng.integers(1, 4, n_parents)
    p = np.repeat(np.arange(n_parents), copies)
    label_p = (rng.random(n_parents) < 0.5).astype(np.int8)
    L = TINY.max_len
    base = rng.normal(size=(n_parents, 2, L, 5)) + shift * label_p[:, None, None, None]
    lengths = rng.integers(2, L + 1, (n_parents, 2))
    n_ev = len(p)
    lund = (base[p] + 0.05 * rng.normal(size=(n_ev, 2, L, 5))).astype(np.float32)
    mask = (np.arange(L)[None, None, :] < lengths[p][:, :, None]).astype(np.float32)
    lund *= mask[..., None]
    ev = {"dataset": np.where(label_p[p] == 1, "svj_a", "qcd").astype(object), "run": np.full(n_ev, 3, np.uint64),
          "luminosityBlock": np.ones(n_ev, np.uint64), "parent": (p + 1).astype(np.uint64),
          "label": label_p[p], "weight": rng.uniform(0.5, 1.5, n_ev)}
    jets = {"lund": lund.reshape(2 * n_ev, L, 5), "mask": mask.reshape(2 * n_ev, L),
            **{k: np.repeat(ev[k], 2) for k in ("label", "weight", "dataset")}}
    return ev, jets


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(ev, jets, cfg, fit_mask=None):
    fold = np.repeat(splits.fold_of(ev["dataset"], ev["run"], ev["luminosityBlock"], ev["parent"], cfg.k, cfg.seed), 2)
    return fold, crossfit_lundnet(jets["lund"], jets["mask"], jets["label"], jets["weight"], jets["dataset"], fold,
                                  cfg, fit_mask)


def test_out_of_fold_scores_come_from_models_that_did_not_see_the_event():
    ev, jets = _events(150, seed=1)
    cfg = CrossFitConfig(model=TINY, k=3, epochs=10, batch_size=64, lr=1e-2, seed=4, threads=1)
    split = np.repeat(splits.split_of(ev["dataset"], ev["run"], ev["luminosityBlock"], ev["parent"]), 2)
    fit = split == splits.TRAIN
    fold, res = _run(ev, jets, cfg, fit)
    parent_jet = np.repeat(ev["parent"], 2)
    assert np.isfinite(res.scores).all() and len(res.models) == 3
    for j in range(3):
        seen = res.train_index[j]
        np.testing.assert_array_equal(seen, np.flatnonzero(fit & (fold != j)))
        held = np.flatnonzero(fold == j)
        assert len(held) and not np.intersect1d(seen, held).size
        # no copy of a held-out parent was seen either
        assert not np.intersect1d(parent_jet[seen], parent_jet[held]).size
        # the jets of fold j carry model j's scores
        np.testing.assert_array_equal(res.scores[held], res.models[j].predict(jets["lund"][held], jets["mask"][held]))
    # every jet scored by exactly one fold model, and it learnt something on unseen events
    assert weighted_auc(res.scores, jets["label"], jets["weight"]) > 0.75


def test_crossfit_is_deterministic_and_the_seed_matters():
    ev, jets = _events(80, seed=2)
    cfg = CrossFitConfig(model=TINY, k=2, epochs=1, batch_size=64, seed=1, threads=1)
    _, a = _run(ev, jets, cfg)
    _, b = _run(ev, jets, cfg)
    np.testing.assert_array_equal(a.scores, b.scores)
    _, c = _run(ev, jets, CrossFitConfig(model=TINY, k=2, epochs=1, batch_size=64, seed=2, threads=1))
    assert not np.array_equal(a.scores, c.scores)


def test_in_sample_scores_are_optimistic_out_of_fold_are_not():
    """Random labels: a model that trained on an event scores it better than chance; out-of-fold
    scores (what the twin trains on) do not."""
    ev, jets = _events(40, seed=3, shift=0.0)
    rng = np.random.default_rng(5)
    jets["label"] = np.repeat(rng.integers(0, 2, len(ev["parent"])), 2).astype(np.int8)
    cfg = CrossFitConfig(model=LundNetConfig(block_widths=(16,), fusion=16, head=16, max_len=8, dropout=0.0), k=2,
                         epochs=60, batch_size=32, lr=1e-2, seed=0, threads=1)
    fold, res = _run(ev, jets, cfg)
    in_sample = np.empty_like(res.scores)
    for j in range(2):
        seen = res.train_index[j]
        in_sample[seen] = res.models[j].predict(jets["lund"][seen], jets["mask"][seen])
    auc_in = weighted_auc(in_sample, jets["label"], np.ones(len(fold)))
    auc_oof = weighted_auc(res.scores, jets["label"], np.ones(len(fold)))
    assert auc_in > 0.8 and abs(auc_oof - 0.5) < 0.15, (auc_in, auc_oof)


def test_config_errors_name_the_key():
    for kw, key in (({"k": 1}, "crossfit.k"), ({"epochs": 0}, "crossfit.epochs"), ({"lr": 0.0}, "crossfit.lr")):
        with pytest.raises(ConfigError, match=key):
            CrossFitConfig(model=TINY, **kw)
    ev, jets = _events(10, seed=4)
    with pytest.raises(ConfigError, match="crossfit.k"):
        crossfit_lundnet(jets["lund"], jets["mask"], jets["label"], jets["weight"], jets["dataset"],
                         np.full(len(jets["label"]), 5), CrossFitConfig(model=TINY, k=2))


def _write_skim(path, n_parents: int, seed: int):
    import awkward as ak

    ev, jets = _events(n_parents, seed=seed)
    n = len(ev["parent"])
    cols = {f"lund_{j}": jets["lund"][i::2] for i, j in enumerate(("j0", "j1"))}
    cols.update({f"lund_{j}_mask": jets["mask"][i::2].astype(bool) for i, j in enumerate(("j0", "j1"))})
    cols.update(weight=ev["weight"], label=ev["label"], run=ev["run"], luminosityBlock=ev["luminosityBlock"],
                parent=ev["parent"], event=np.arange(1, n + 1, dtype=np.uint64))
    cols["dataset"] = ak.Array([str(d) for d in ev["dataset"]])
    ak.to_parquet(ak.zip(cols, depth_limit=1), str(path))
    return path, n


def test_crossfit_skim_keys_every_copy(tmp_path):
    import awkward as ak

    _, n = _write_skim(tmp_path / "skim.parquet", 60, seed=6)
    cfg = CrossFitConfig(model=TINY, k=2, epochs=1, batch_size=64, seed=1, threads=1)
    table, res = crossfit_skim([tmp_path / "skim.parquet"], cfg, fit_subset=None)
    assert len(table["event"]) == n and np.isfinite(table["lundnet_j0"]).all()
    fold_of = dict(zip(table["event"].tolist(), table["lundnet_fold"].tolist()))
    par = dict(zip(table["event"].tolist(), table["parent"].tolist()))
    by_parent: dict[int, set] = {}
    for e, f in fold_of.items():
        by_parent.setdefault(par[e], set()).add(f)
    assert all(len(s) == 1 for s in by_parent.values())
    from svjscout.models.lundnet_training.crossfit import write_oof_table

    out = write_oof_table(table, tmp_path / "oof.parquet")
    back = ak.from_parquet(str(out))
    np.testing.assert_array_equal(ak.to_numpy(back["lundnet_j1"]), table["lundnet_j1"])
    # the twin's look-up by event identity, in any order
    from svjscout.core.exceptions import InputFileError
    from svjscout.models.lundnet_training.crossfit import lookup_oof, read_oof_table

    t = read_oof_table(out)
    perm = np.random.default_rng(0).permutation(n)
    j0, j1, found = lookup_oof(t, t["dataset"][perm], t["run"][perm], t["luminosityBlock"][perm], t["event"][perm])
    assert found.all()
    np.testing.assert_array_equal(j0, table["lundnet_j0"][perm])
    np.testing.assert_array_equal(j1, table["lundnet_j1"][perm])
    # an unknown event of a (dataset, run, lumi) block the table holds: the skims disagree, an error
    ds0, run0, lb0 = t["dataset"][0], int(t["run"][0]), int(t["luminosityBlock"][0])
    with pytest.raises(InputFileError, match="1 event.*though their"):
        lookup_oof(t, np.array([ds0], dtype=object), [run0], [lb0], [10**9], what="twin skim")
    # events of a block the table does not hold (a file outside LundNet's skim): not found, NaN, no error
    new_run = int(np.max(t["run"])) + 1
    j0, j1, found = lookup_oof(t, np.array([ds0, ds0], dtype=object), [run0, new_run], [lb0, lb0],
                               [int(t["event"][0]), 5], what="twin skim")
    assert found.tolist() == [True, False]
    assert j0[0] == t["lundnet_j0"][0] and np.isnan(j0[1]) and np.isnan(j1[1])


def test_train_lundnet_writes_out_of_fold_scores(tmp_path):
    """``crossfit_k`` in LundNet's TrainConfig: the full model as before plus lundnet_oof.parquet,
    whose fold models trained on LundNet's training subset outside their fold."""
    import awkward as ak

    from svjscout.models.train_lundnet import TrainConfig, train_lundnet

    path, n = _write_skim(tmp_path / "skim.parquet", 150, seed=8)
    cfg = TrainConfig(model=TINY, epochs=1, patience=1, seed=3, batch_size=64, threads=1, progress=False,
                      crossfit_k=2, crossfit_epochs=1)
    res = train_lundnet([path], tmp_path / "out", cfg)
    assert res.oof_path == tmp_path / "out" / "lundnet_oof.parquet" and (tmp_path / "out" / "lundnet.onnx").exists()
    oof = ak.from_parquet(str(res.oof_path))
    assert len(oof) == n and np.isfinite(ak.to_numpy(oof["lundnet_j0"])).all()
    fold = ak.to_numpy(oof["lundnet_fold"])
    expect = splits.fold_of(np.asarray(ak.to_list(oof["dataset"]), dtype=object), ak.to_numpy(oof["run"]),
                            ak.to_numpy(oof["luminosityBlock"]), ak.to_numpy(oof["parent"]), 2, 3)
    np.testing.assert_array_equal(fold, expect)
    for bad in ({"crossfit_k": 1}, {"crossfit_epochs": 0}):
        with pytest.raises(ConfigError, match="train.crossfit"):
            TrainConfig(model=TINY, **bad)
