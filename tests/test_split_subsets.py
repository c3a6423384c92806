"""The working point chosen on the twin's `select` subset and quoted on its untouched `final` subset
(issue 29): ``analysis.event_subset: {subset: [select, final]}`` with ``scan.split_on: subsets``.

Checked against runs of each subset alone (their yields and parent-grouped variances are what
each half must reproduce), against subset codes computed from the files' branches, and on toy
outputs for the refusals.
"""

import numpy as np
import pytest
import uproot
from conftest import embedded_file

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, HistogramError
from svjscout.datacards import ScanRules
from svjscout.datacards.choice import WorkingPointChoice, choose_working_point
from svjscout.datacards.parents import StatInputs
from svjscout.datacards.split import split_halves, subset_halves
from svjscout.jobs.commands_datacards import _cards_inputs
from svjscout.jobs.config import load_job, scan_subsets
from svjscout.jobs.runner import run_processor
from svjscout.processors.histograms import book
from svjscout.processors.normalize import _subset_of_keys, flat_bins
from svjscout.processors.settings import EventSubset

FR4 = splits.DEFAULT_FRACTIONS4


def _job(tmp_path, toy_models, datasets, extra=()):
    lines = ["datasets:"] + [f"  {n}: {{kind: {k}, files: ['{p}']}}" for n, (k, p) in datasets.items()]
    lines += ["analysis:", f"  lundnet_model: {toy_models[0]}", f"  twin_model: {toy_models[1]}", "  wp: [0.5, 0.5]",
              "executor: {name: iterative, chunksize: 3000}", *extra]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    return job


def _codes_by_key(path: str, dataset: str) -> dict[int, int]:
    """4-way subset code of every parent key of a file, from its branches (not the processor)."""
    with uproot.open(path) as f:
        t = f["Events"]
        b = {k: t[k].array(library="np").astype(np.uint64) for k in ("run", "luminosityBlock", "event", "parent")
             if k in t.keys()}
    key = (b["run"] << np.uint64(40)) | b.get("parent", b["event"])
    code = splits.split4_of(np.full(len(key), dataset, dtype=object), b["run"], b["luminosityBlock"], key,
                            splits.DEFAULT_SEED, FR4)
    return dict(zip(key.tolist(), code.tolist()))


@pytest.mark.slow
def test_halves_are_the_select_and_final_runs(tmp_path, toy_models):
    """A run over [select, final], split by its subset codes, gives for each half exactly the
    xy_mt (values and parent-grouped variances) of a run over that subset alone; the records'
    codes are those of the files' branches; the choice is quoted on the final events only."""
    data = {"ttbar": ("background", embedded_file("ttbar.root")),  # detector copies: 1-3 per parent
            "svj_mz2000_rinv0.3": ("signal", embedded_file("svj_mz2000_rinv0.3.root"))}
    job = _job(tmp_path, toy_models, data)
    both = {"analysis.event_subset": {"subset": ["select", "final"]}, "scan.split_on": "subsets"}
    cfg = load_job(job, both)
    out, _ = run_processor(cfg)
    alone = {name: run_processor(load_job(job, {"analysis.event_subset": {"subset": name}}))[0]
             for name in ("select", "final")}
    subsets = scan_subsets(cfg)
    assert subsets == {"select": (splits.SELECT, pytest.approx(2.0)), "quote": (splits.FINAL, pytest.approx(2.0))}
    halves = split_halves(out, subsets=subsets)
    for half, name in (("select", "select"), ("quote", "final")):
        got = halves[half]["hists"]["xy_mt"].view(flow=True)
        want = alone[name]["hists"]["xy_mt"].view(flow=True)
        assert want["value"].sum() > 0
        np.testing.assert_allclose(got["value"], want["value"], rtol=1e-9, atol=1e-12 * want["value"].max())
        np.testing.assert_allclose(got["variance"], want["variance"], rtol=1e-9, atol=1e-12 * want["variance"].max())
    for ds, (_, path) in data.items():
        rec = out["parent_fills"][ds]
        by_key = _codes_by_key(path, ds)
        assert set(np.unique(rec["subset"]).tolist()) == {splits.SELECT, splits.FINAL}
        assert [by_key[k] for k in rec["key"].tolist()] == rec["subset"].tolist()
        # every copy of a parent is in one subset: the halves share no parent
        ks, kq = (set(halves[h]["parent_fills"][ds]["key"].tolist()) for h in ("select", "quote"))
        assert ks and kq and not ks & kq
    choice = choose_working_point(out, ScanRules(), grid=5, subsets=subsets)
    assert choice.split and "'final' subset" in choice.source and choice.scan.sample == "the 'select' subset of the MC"
    backed = WorkingPointChoice(choice.wp, choice.source, choice.scan, choice.row, choice.inputs, True)
    assert backed.verdict().endswith("(chosen on the MC's 'select' subset)")
    final = StatInputs.from_output(alone["final"])
    np.testing.assert_allclose(choice.inputs.xy_mt.values(flow=True), final.xy_mt.values(flow=True), rtol=1e-9,
                               atol=1e-12 * final.xy_mt.values(flow=True).max())
    # the run's record of its choice gives `svjscout datacards` the same quote half
    out["wp"] = {"x0": choice.wp[0], "y0": choice.wp[1], "split": True, "split_seed": 0,
                 "split_subsets": {k: list(v) for k, v in subsets.items()}}
    again = _cards_inputs(out)
    np.testing.assert_array_equal(again.xy_mt.values(flow=True), choice.inputs.xy_mt.values(flow=True))


def test_event_subset_names_and_fractions():
    s = EventSubset(subset=["select", "final"])
    assert s.fractions == FR4 and s.codes == (splits.SELECT, splits.FINAL) and s.fraction == pytest.approx(0.30)
    assert EventSubset(subset="final").fraction == pytest.approx(0.15)
    assert EventSubset(subset="test").fractions == splits.DEFAULT_FRACTIONS
    assert EventSubset(subset="val", fractions=[0.4, 0.3, 0.2, 0.1]).fraction == pytest.approx(0.3)
    assert EventSubset(subset=["train", "val"]).fraction == pytest.approx(0.8)  # 3-way
    with pytest.raises(ConfigError, match="lists"):
        _ = s.code
    for bad, word in (({"subset": "select", "fractions": [0.6, 0.2, 0.2]}, "3-way"),
                      ({"subset": "test", "fractions": list(FR4)}, "4-way"),
                      ({"subset": ["final", "final"]}, "twice"), ({"subset": []}, "non-empty"),
                      ({"subset": "val", "fractions": [0.5, 0.5]}, "expected 3")):
        with pytest.raises(ValueError, match=word):
            EventSubset(**bad)
    # a run's code lookup is the 4-way split of the same key
    ds = np.array(["a"] * 1000, dtype=object)
    run, lumi, parent = np.ones(1000, np.uint64), np.ones(1000, np.uint64), np.arange(1000, dtype=np.uint64)
    np.testing.assert_array_equal(s.codes_of(ds, run, lumi, parent), splits.split4_of(ds, run, lumi, parent))


def test_split_on_subsets_config(tmp_path, toy_models):
    job = _job(tmp_path, toy_models, {"qcd": ("background", embedded_file("qcd.root"))})
    with pytest.raises(ConfigError, match=r"analysis\.event_subset\.subset must list two.*no analysis\.event_subset"):
        load_job(job, {"scan.split_on": "subsets"})
    with pytest.raises(ConfigError, match=r"must list two.*\['final'\]"):
        load_job(job, {"scan.split_on": "subsets", "analysis.event_subset": {"subset": "final"}})
    with pytest.raises(ConfigError, match=r"scan\.split: true"):
        load_job(job, {"scan.split_on": "subsets", "scan.split": False,
                       "analysis.event_subset": {"subset": ["select", "final"]}})
    with pytest.raises(ConfigError, match=r"scan\.split_on"):
        load_job(job, {"scan.split_on": "halves"})
    cfg = load_job(job, {"analysis.event_subset": {"subset": ["select", "final"],
                                                   "fractions": [0.5, 0.2, 0.2, 0.1]}, "scan.split_on": "subsets"})
    got = scan_subsets(cfg)
    assert got["select"] == (splits.SELECT, pytest.approx(1.5)) and got["quote"] == (splits.FINAL, pytest.approx(3.0))
    assert scan_subsets(load_job(job, {"analysis.event_subset": {"subset": ["select", "final"]}})) is None


def _toy_output(n_parents=600, seed=5):
    """xy_mt filled by parents with 1-3 copies, each parent in subset SELECT or FINAL."""
    rng = np.random.default_rng(seed)
    h = book([650.0, 1000.0, 2000.0], ["bkg"])["xy_mt"]
    keys = rng.integers(1, 2**62, n_parents, dtype=np.uint64)
    codes = np.where(rng.random(n_parents) < 0.5, splits.SELECT, splits.FINAL).astype(np.int8)
    copies = rng.integers(1, 4, n_parents)
    k, c = np.repeat(keys, copies), np.repeat(codes, copies)
    x, y = rng.random(len(k)) * 0.999, rng.random(len(k)) * 0.999
    mt = rng.uniform(700, 1900, len(k))
    w = rng.uniform(0.5, 2.0, len(k))
    h.fill(dataset="bkg", plane="SP", x=x, y=y, mt=mt, weight=w)
    b = flat_bins(h, dataset="bkg", plane="SP", x=x, y=y, mt=mt)
    return ({"hists": {"xy_mt": h}, "parent_fills": {"bkg": {"key": k, "bin": b, "weight": w, "subset": c}},
             "datasets": {"bkg": {"kind": "background"}}}, (k, b, w, c))


def test_halves_by_subset_code_on_a_toy():
    out, (k, b, w, c) = _toy_output()
    subsets = subset_halves(("select", "final"), (splits.SELECT, splits.FINAL), (0.2, 0.1))
    halves = split_halves(out, subsets=subsets)
    size = out["hists"]["xy_mt"].view(flow=True).size
    for half, code, scale in (("select", splits.SELECT, 1.5), ("quote", splits.FINAL, 3.0)):
        m = c == code
        want = np.bincount(b[m], weights=w[m] * scale, minlength=size)
        got = halves[half]["hists"]["xy_mt"].view(flow=True)["value"].ravel()
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert set(halves[half]["parent_fills"]["bkg"]["subset"].tolist()) == {code}
    with pytest.raises(HistogramError, match="expected two subsets"):
        subset_halves(("final",), (splits.FINAL,), (0.15,))
    third = {**out, "parent_fills": {"bkg": {**out["parent_fills"]["bkg"],
                                             "subset": np.where(c == splits.SELECT, splits.VAL, c).astype(np.int8)}}}
    with pytest.raises(HistogramError, match=r"subset code\(s\) \[1\]"):
        split_halves(third, subsets=subsets)
    bare = {**out, "parent_fills": {"bkg": {kk: v for kk, v in out["parent_fills"]["bkg"].items() if kk != "subset"}}}
    with pytest.raises(HistogramError, match="no subset codes"):
        split_halves(bare, subsets=subsets)
    with pytest.raises(HistogramError, match="no subset codes"):  # asked for: no silent fallback to a hash split
        choose_working_point(bare, ScanRules(), grid=3, subsets=subsets)


def test_subset_of_grouped_keys():
    keys = np.array([5, 3, 5, 9, 3], np.uint64)
    codes = np.array([4, 3, 4, 3, 3], np.int8)
    np.testing.assert_array_equal(_subset_of_keys(keys, codes, np.array([3, 5, 9], np.uint64), "d"), [3, 4, 3])
    with pytest.raises(ConfigError, match="dataset 'd'.*two subset codes"):
        _subset_of_keys(keys, np.array([4, 3, 3, 3, 3], np.int8), np.array([3, 5, 9], np.uint64), "d")
