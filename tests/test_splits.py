"""The event-level split shared by LundNet and the twin (svjscout/core/splits.py, issue 22 item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError
from svjscout.processors.features import EVENT_FEATURES

L_NODES = 4


def _events(n_parents: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A hand-made event list: parents with 1-4 detector copies each (same run, lumi and parent,
    different event numbers), two signal and two background datasets, two runs per dataset."""
    rng = np.random.default_rng(seed)
    copies = rng.integers(1, 5, n_parents)
    parent_idx = np.repeat(np.arange(n_parents), copies)
    n = len(parent_idx)
    datasets = np.array(["svj_mz2000_rinv0.3", "svj_mz3000_rinv0.3", "qcd_pt300to500", "ttbar"], dtype=object)
    ds_of_parent = datasets[rng.integers(0, 4, n_parents)]
    run_of_parent = rng.integers(1, 3, n_parents).astype(np.uint64) * 1000
    lumi_of_parent = rng.integers(1, 6, n_parents).astype(np.uint64)
    copy_no = np.arange(n) - np.repeat(np.cumsum(copies) - copies, copies)
    cols: dict[str, np.ndarray] = {
        "dataset": ds_of_parent[parent_idx],
        "run": run_of_parent[parent_idx],
        "luminosityBlock": lumi_of_parent[parent_idx],
        "parent": (parent_idx + 1).astype(np.uint64),
        "event": (parent_idx * 8 + copy_no + 1).astype(np.uint64),
    }
    sig = np.array([str(d).startswith("svj") for d in cols["dataset"]])
    cols["label"] = sig.astype(np.int8)
    cols["mzprime"] = np.where(sig, np.where(cols["dataset"] == "svj_mz2000_rinv0.3", 2000.0, 3000.0), np.nan)
    cols["rinv"] = np.where(sig, 0.3, np.nan)
    cols["weight"] = rng.uniform(0.5, 1.5, n)
    for f in EVENT_FEATURES:
        cols[f] = rng.uniform(0, 1, n)
    cols["rt"] = rng.uniform(0.25, 0.5, n)
    cols["dphi_min"] = rng.uniform(0, 0.7, n)
    cols["mt"] = 700.0 + rng.exponential(300.0, n)
    cols["deta"] = rng.uniform(0, 2.0, n)
    for jet in ("j0", "j1"):
        cols[f"lund_{jet}"] = rng.normal(size=(n, L_NODES, 5)).astype(np.float32)
        cols[f"lund_{jet}_mask"] = np.ones((n, L_NODES), bool)
    return cols


def _write(cols: dict[str, np.ndarray], folder: Path, n_files: int, order: np.ndarray, drop=()) -> list[Path]:
    """The events in ``order``, cut into ``n_files`` parquet files in ``folder``."""
    import awkward as ak

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rows in enumerate(np.array_split(order, n_files)):
        record = {k: (ak.Array(list(v[rows])) if k == "dataset" else v[rows]) for k, v in cols.items() if k not in drop}
        path = folder / f"chunk_{i}_{folder.name}.parquet"
        ak.to_parquet(ak.Array(record), str(path))
        paths.append(path)
    return paths


def _twin_split(paths, **kw) -> dict[tuple, int]:
    from svjscout.models.train_twin import load_skim, split_codes

    d = load_skim(paths)
    code = split_codes(d, **kw)
    return {(str(a), int(b), int(c), int(e)): int(s) for a, b, c, e, s in zip(d.dataset, d.run, d.lumi, d.event, code)}


def _lundnet_split(paths, cols, **kw) -> dict[tuple, int]:
    """LundNet's split per event; the event's key is found through its (unique) first Lund node."""
    from svjscout.models.train_lundnet import load_skim

    jets = load_skim(paths, max_len=L_NODES, one_copy_per_parent=False, **kw)
    assert (jets.split[0::2] == jets.split[1::2]).all()
    first = jets.lund[0::2, 0, 0]
    index = {float(v): i for i, v in enumerate(cols["lund_j0"][:, 0, 0])}
    out = {}
    for v, s in zip(first, jets.split[0::2]):
        i = index[float(v)]
        out[(str(cols["dataset"][i]), int(cols["run"][i]), int(cols["luminosityBlock"][i]),
             int(cols["event"][i]))] = int(s)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cols = _events(1500)
    n = len(cols["event"])
    base = tmp_path_factory.mktemp("splits")
    ordered = _write(cols, base / "first" / "qcd", 2, np.arange(n))
    shuffled = _write(cols, base / "elsewhere" / "deeper", 3, np.random.default_rng(7).permutation(n))
    return cols, ordered, shuffled


@pytest.mark.slow
def test_both_trainers_give_the_same_split_independent_of_path_and_row_order(written):
    cols, ordered, shuffled = written
    twin_a, twin_b = _twin_split(ordered), _twin_split(list(reversed(shuffled)))
    lund_a, lund_b = _lundnet_split(ordered, cols), _lundnet_split(shuffled, cols)
    assert len(twin_a) == len(cols["event"])
    assert twin_a == twin_b  # other folders, file names, file order and row order
    assert lund_a == lund_b
    assert twin_a == lund_a  # one split for both trainers
    assert set(twin_a.values()) == {splits.TRAIN, splits.VAL, splits.TEST}
    # and it is the seed that changes it
    other = _twin_split(ordered, seed=2)
    assert sum(other[k] != v for k, v in twin_a.items()) > 0.3 * len(twin_a)


def test_copies_of_one_parent_are_never_split(written):
    cols, ordered, _ = written
    code = _twin_split(ordered)
    groups: dict[tuple, set] = {}
    for i in range(len(cols["event"])):
        key = (str(cols["dataset"][i]), int(cols["run"][i]), int(cols["luminosityBlock"][i]), int(cols["event"][i]))
        groups.setdefault((key[0], key[1], key[2], int(cols["parent"][i])), set()).add(code[key])
    assert len(groups) < 0.5 * len(cols["event"])  # most parents have copies
    assert all(len(g) == 1 for g in groups.values())
    # a key without the parent (every copy its own event) would split them
    u = splits.split_u(cols["dataset"], cols["run"], cols["luminosityBlock"], cols["event"])
    per_event = splits.assign(u, 0.2, 0.2)
    parents = {}
    for p, s in zip(zip(cols["dataset"], cols["run"], cols["parent"]), per_event):
        parents.setdefault(p, set()).add(int(s))
    assert any(len(g) > 1 for g in parents.values())


def test_missing_parent_falls_back_to_event(tmp_path, written):
    cols, _, _ = written
    n = len(cols["event"])
    no_parent = _write(cols, tmp_path / "np", 1, np.arange(n), drop=("parent",))
    as_event = _write({**cols, "parent": cols["event"]}, tmp_path / "pe", 1, np.arange(n))
    assert _twin_split(no_parent) == _twin_split(as_event)
    assert _lundnet_split(no_parent, cols) == _lundnet_split(as_event, cols)


def test_twin_test_is_inside_lundnet_test():
    from svjscout.models.train_lundnet import TrainConfig
    from svjscout.models.train_twin import TwinTrainConfig

    twin, lund = TwinTrainConfig(split=splits.DEFAULT_FRACTIONS), TrainConfig()  # the 3-way split (4-way: below)
    assert twin.seed == lund.seed and twin.split[2] == lund.test_fraction and twin.split[1] == lund.val_fraction
    cols = _events(4000, seed=3)
    u = splits.split_u(cols["dataset"], cols["run"], cols["luminosityBlock"], cols["parent"], twin.seed)
    twin_test = splits.assign(u, twin.split[1], twin.split[2]) == splits.TEST
    lund_test = splits.assign(u, lund.val_fraction, lund.test_fraction) == splits.TEST
    assert twin_test.any() and not (twin_test & ~lund_test).any()
    # nested thresholds: a smaller twin test fraction (any validation fraction) stays inside
    smaller = splits.assign(u, 0.35, 0.1) == splits.TEST
    assert smaller.any() and not (smaller & ~lund_test).any() and (lund_test & ~smaller).any()
    splits.check_nested(0.1, 0.2, 1, 1)
    with pytest.raises(ConfigError, match="test fraction"):
        splits.check_nested(0.3, 0.2, 1, 1)
    with pytest.raises(ConfigError, match="seed"):
        splits.check_nested(0.2, 0.2, 1, 2)


@pytest.mark.parametrize("fractions", [splits.DEFAULT_FRACTIONS, (0.4, 0.2, 0.4), (0.7, 0.1, 0.2)])
def test_fractions_match_the_configured_ones(fractions):
    n = 40_000
    rng = np.random.default_rng(11)
    dataset = np.array(["qcd", "ttbar", "svj"], dtype=object)[rng.integers(0, 3, n)]
    parent = rng.choice(2**40, n, replace=False).astype(np.uint64)
    code = splits.split_of(dataset, np.full(n, 1), np.full(n, 3), parent, seed=1, fractions=fractions)
    for which, f in zip((splits.TRAIN, splits.VAL, splits.TEST), fractions):
        got = float(np.mean(code == which))
        assert abs(got - f) < 4 * np.sqrt(f * (1 - f) / n), (which, got, f)
    # per dataset too (the dataset enters the hash, not a shared stream)
    for name in ("qcd", "svj"):
        sel = dataset == name
        assert abs(np.mean(code[sel] == splits.TEST) - fractions[2]) < 4 * np.sqrt(fractions[2] / sel.sum())
    with pytest.raises(ConfigError):
        splits.split_of(dataset, None, None, parent, fractions=(0.5, 0.5, 0.5))


def test_twin_refuses_a_test_subset_outside_the_lundnet_models(tmp_path):
    """A LundNet model records its split; a twin whose test subset would reach outside it is refused."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_twin import _lundnet_onnx

    from svjscout.models.export import write_metadata
    from svjscout.models.train_twin import TwinTrainConfig, _check_lundnet_split

    model = _lundnet_onnx(tmp_path / "lundnet.onnx")
    write_metadata(model, {"training": {"split": {"seed": 1, "val_fraction": 0.2, "test_fraction": 0.2}}})
    _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model)))  # the defaults nest
    _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), split=(0.6, 0.3, 0.1)))
    with pytest.raises(ConfigError, match="test fraction"):
        _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), split=(0.4, 0.2, 0.4)))
    with pytest.raises(ConfigError, match="seed"):
        _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), seed=2))


def test_lundnet_keeps_one_copy_per_parent_with_its_summed_weight(written):
    """Detector copies are near-duplicate jets: LundNet keeps each parent's first copy, weighted
    with the sum of its copies' weights, whatever the files' order."""
    from svjscout.models.train_lundnet import load_skim

    cols, ordered, shuffled = written
    a = load_skim(ordered, max_len=L_NODES)
    b = load_skim(list(reversed(shuffled)), max_len=L_NODES)
    key = np.array([f"{d}|{r}|{lb}|{p}" for d, r, lb, p in zip(cols["dataset"], cols["run"],
                                                                cols["luminosityBlock"], cols["parent"])])
    uniq, inv = np.unique(key, return_inverse=True)
    assert len(a.label) == 2 * len(uniq)  # two jets per kept event
    total = np.bincount(inv, cols["weight"])
    # the first copy (lowest event) of every parent carries the parent's total weight
    first = {}
    for i in np.argsort(cols["event"], kind="stable"):
        first.setdefault(key[i], i)
    expected = {float(cols["lund_j0"][i, 0, 0]): total[inv[i]] for i in first.values()}
    got = {float(v): w for v, w in zip(a.lund[0::2, 0, 0], a.weight[0::2])}
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k], rel=1e-12) for k in got)
    np.testing.assert_array_equal(a.lund, b.lund)
    np.testing.assert_array_equal(a.weight, b.weight)


def test_twin_split_seed_fixes_the_split_while_seed_varies(written):
    """split_seed keeps the events of each subset while seed changes the initialisation."""
    from svjscout.models.train_twin import TwinTrainConfig, load_skim, split_codes

    _, ordered, _ = written
    d = load_skim(ordered)
    a = TwinTrainConfig(seed=1)
    b = TwinTrainConfig(seed=7, split_seed=1)
    c = TwinTrainConfig(seed=7)
    assert a.event_split_seed == b.event_split_seed == 1 and c.event_split_seed == 7
    np.testing.assert_array_equal(split_codes(d, a.split, a.event_split_seed),
                                  split_codes(d, b.split, b.event_split_seed))
    assert not np.array_equal(split_codes(d, a.split, a.event_split_seed), split_codes(d, c.split, c.event_split_seed))


# ---- four subsets by parent and the k-fold cross-fit folds (issue 29) ----------------------------------------

def _key(cols):
    return cols["dataset"], cols["run"], cols["luminosityBlock"], cols["parent"]


def test_four_subsets_are_disjoint_cover_and_have_the_configured_fractions():
    n = 40_000
    rng = np.random.default_rng(12)
    dataset = np.array(["qcd", "ttbar", "svj"], dtype=object)[rng.integers(0, 3, n)]
    parent = rng.choice(2**40, n, replace=False).astype(np.uint64)
    code = splits.split4_of(dataset, np.full(n, 1), np.full(n, 3), parent)
    assert set(np.unique(code)) == {splits.TRAIN, splits.VAL, splits.SELECT, splits.FINAL}
    for which, f in zip((splits.TRAIN, splits.VAL, splits.SELECT, splits.FINAL), splits.DEFAULT_FRACTIONS4):
        got = float(np.mean(code == which))
        assert abs(got - f) < 4 * np.sqrt(f * (1 - f) / n), (which, got, f)
    # the names index the codes
    assert [splits.SUBSET_NAMES[c] for c in (splits.TRAIN, splits.VAL, splits.SELECT, splits.FINAL)] == list(
        splits.SPLIT4_NAMES)
    for bad in ((0.5, 0.5, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.3, 0.0, 0.0)):
        with pytest.raises(ConfigError, match="fractions4"):
            splits.assign4(np.zeros(3), bad)


def test_four_subsets_deterministic_under_row_order_and_copies_together():
    cols = _events(3000, seed=5)
    code = splits.split4_of(*_key(cols))
    perm = np.random.default_rng(1).permutation(len(code))
    code_p = splits.split4_of(*(np.asarray(c)[perm] for c in _key(cols)))
    np.testing.assert_array_equal(code[perm], code_p)
    groups: dict[tuple, set] = {}
    for d, r, lb, p, c in zip(*_key(cols), code):
        groups.setdefault((str(d), int(r), int(lb), int(p)), set()).add(int(c))
    assert len(groups) < 0.5 * len(code)
    assert all(len(g) == 1 for g in groups.values())


def test_four_subsets_nest_in_lundnets_three():
    """LundNet's training events never meet the twin's select/final events; final inside LundNet's test."""
    cols = _events(6000, seed=8)
    u = splits.split_u(*_key(cols), seed=splits.DEFAULT_SEED)
    f3 = splits.DEFAULT_FRACTIONS
    three = splits.assign(u, f3[1], f3[2])
    four = splits.assign4(u)
    np.testing.assert_array_equal(four, splits.split4_of(*_key(cols)))
    held = (four == splits.SELECT) | (four == splits.FINAL)
    assert held.any() and not (held & (three == splits.TRAIN)).any()
    assert not ((four == splits.FINAL) & (three != splits.TEST)).any()
    splits.check_nested4(splits.DEFAULT_FRACTIONS4, f3[1], f3[2], 1, 1)
    with pytest.raises(ConfigError, match="final fraction"):
        splits.check_nested4((0.4, 0.1, 0.2, 0.3), 0.2, 0.2, 1, 1)  # final 0.3 > test 0.2
    with pytest.raises(ConfigError, match="select \\+ final"):
        splits.check_nested4((0.4, 0.1, 0.35, 0.15), 0.2, 0.2, 1, 1)  # 0.5 > 0.4
    with pytest.raises(ConfigError, match="seed"):
        splits.check_nested4(splits.DEFAULT_FRACTIONS4, 0.2, 0.2, 1, 2)
    # a violating configuration does put LundNet training events into select
    bad = splits.assign4(u, (0.4, 0.1, 0.35, 0.15))
    assert ((bad == splits.SELECT) & (three == splits.TRAIN)).any()


def test_folds_by_parent_are_balanced_independent_of_subsets_and_row_order():
    cols = _events(6000, seed=9)
    k = 4
    fold = splits.fold_of(*_key(cols), k=k)
    assert fold.min() == 0 and fold.max() == k - 1
    n_par = len({(str(d), int(r), int(lb), int(p)) for d, r, lb, p in zip(*_key(cols))})
    groups: dict[tuple, set] = {}
    for d, r, lb, p, f in zip(*_key(cols), fold):
        groups.setdefault((str(d), int(r), int(lb), int(p)), set()).add(int(f))
    assert len(groups) == n_par and all(len(g) == 1 for g in groups.values())
    first = {key: next(iter(g)) for key, g in groups.items()}
    counts = np.bincount(list(first.values()), minlength=k)
    assert np.all(np.abs(counts / n_par - 1 / k) < 4 * np.sqrt((1 / k) * (1 - 1 / k) / n_par))
    perm = np.random.default_rng(2).permutation(len(fold))
    np.testing.assert_array_equal(fold[perm], splits.fold_of(*(np.asarray(c)[perm] for c in _key(cols)), k=k))
    # independent of the subsets: every fold has about the final fraction of final events
    four = splits.split4_of(*_key(cols))
    for j in range(k):
        frac = np.mean(four[fold == j] == splits.FINAL)
        assert abs(frac - 0.15) < 0.05, (j, frac)
    with pytest.raises(ConfigError, match="k=1"):
        splits.fold_of(*_key(cols), k=1)
