"""``analysis.event_subset``: the processor on one subset of the shared train/val/test event split.

The events kept are those the trainers put in that subset (same key as the skim's columns), the
three subsets partition the sample (histograms x fraction add up to the full run), bad settings
and data datasets are refused.
"""

import awkward as ak
import numpy as np
import pytest
from conftest import assert_same_output, embedded_file, rewrite_file, with_executor

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor

FRACTIONS = (0.6, 0.2, 0.2)


def _job(tmp_path, toy_models, datasets: dict[str, tuple[str, str]], chunksize: int = 10000):
    lines = ["datasets:"] + [f"  {name}: {{kind: {kind}, files: ['{path}']}}"
                             for name, (kind, path) in datasets.items()]
    lines += ["analysis:", f"  lundnet_model: {toy_models[0]}", f"  twin_model: {toy_models[1]}", "  wp: [0.5, 0.5]",
              f"executor: {{name: iterative, chunksize: {chunksize}}}"]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    return job


def _subset(name: str, seed: int = splits.DEFAULT_SEED) -> dict:
    return {"analysis.event_subset": {"subset": name, "seed": seed, "fractions": list(FRACTIONS)}}


def _ids(table) -> set[tuple[int, int, int]]:
    cols = [ak.to_numpy(table[c]).astype(np.uint64).tolist() for c in ("run", "luminosityBlock", "event")]
    return set(zip(*cols))


def _file_codes(path: str, dataset: str) -> np.ndarray:
    """Subset codes of every event of a file, from its branches (key: (run << 40) | parent, or
    | event without a parent branch), independently of the processor."""
    import uproot

    with uproot.open(path) as f:
        t = f["Events"]
        names = set(t.keys())
        b = {k: t[k].array(library="np").astype(np.uint64) for k in ("run", "luminosityBlock", "event", "parent")
             if k in names}
    key = (b["run"] << np.uint64(40)) | b.get("parent", b["event"])
    return splits.split_of(np.full(len(key), dataset, dtype=object), b["run"], b["luminosityBlock"], key,
                           splits.DEFAULT_SEED, FRACTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("sample,drop_parent", [("ttbar", False), ("svj_mz3000_rinv0.5", False), ("qcd", True)])
def test_test_subset_is_the_skims_test_split(tmp_path, toy_models, sample, drop_parent):
    """Skim mode with subset test keeps exactly the full skim's events that splits.split_of puts in
    TEST: ttbar (1-3 preselected detector copies per parent: the key is the skim's ``parent``
    column; the embedded QCD keeps one copy per parent), signal (3 in 4 events fail the
    preselection) and qcd rewritten without a ``parent`` branch (the key falls back to ``event``)."""
    path = embedded_file(f"{sample}.root")
    if drop_parent:
        path = rewrite_file(path, tmp_path / f"{sample}_noparent.root", drop=("parent",))
    job = _job(tmp_path, toy_models, {sample: ("background", path)})
    full_out, _ = run_processor(load_job(job), skim_dir=str(tmp_path / "full"))
    test_out, _ = run_processor(load_job(job, _subset("test")), skim_dir=str(tmp_path / "test"))
    full = ak.from_parquet(str(tmp_path / "full" / sample))
    test = ak.from_parquet(str(tmp_path / "test" / sample))

    cols = {c: ak.to_numpy(full[c]) for c in ("run", "luminosityBlock", "event", "parent")}
    if drop_parent:  # the skim's parent column is (run << 40) | event: every event its own parent
        assert np.array_equal(cols["parent"], (cols["run"].astype(np.uint64) << np.uint64(40)) | cols["event"])
    run, lumi, parent = splits.key_columns(cols)
    code = splits.split_of(np.asarray(ak.to_list(full["dataset"]), dtype=object), run, lumi, parent,
                           splits.DEFAULT_SEED, FRACTIONS)
    expected = _ids(full[code == splits.TEST])
    assert 0 < len(expected) < len(full)
    assert _ids(test) == expected
    if sample == "ttbar" and not drop_parent:  # its detector copies of one generated event land in one subset
        test_parents = set(ak.to_numpy(test["parent"]).tolist())
        assert 1 < len(test_parents) < len(ak.to_numpy(test["parent"]))
        assert test_parents.isdisjoint(ak.to_numpy(full["parent"])[code != splits.TEST].tolist())

    # weights: the skim's normalised weight carries 1/fraction, gen_weight is the file's
    order_t = np.lexsort((ak.to_numpy(test["event"]), ak.to_numpy(test["run"])))
    sel = full[code == splits.TEST]
    order_f = np.lexsort((ak.to_numpy(sel["event"]), ak.to_numpy(sel["run"])))
    np.testing.assert_allclose(ak.to_numpy(test["weight"])[order_t], ak.to_numpy(sel["weight"])[order_f] / 0.2,
                               rtol=1e-12)
    np.testing.assert_array_equal(ak.to_numpy(test["gen_weight"])[order_t], ak.to_numpy(sel["gen_weight"])[order_f])
    # counts: the dropped events are counted, the cutflow starts with those kept
    c = test_out["counts"][sample]
    n_test = int(np.count_nonzero(_file_codes(path, sample) == splits.TEST))
    n = full_out["counts"][sample]["events"]
    assert c["events"] == n and c["not_in_subset"] == n - n_test > 0
    assert test_out["cutflow"][sample]["raw"][0] == n_test
    assert test_out["cutflow"][sample]["raw"][-1] == len(test)
    assert full_out["counts"][sample]["not_in_subset"] == 0


@pytest.mark.slow
def test_subsets_partition_the_full_run(tmp_path, toy_models):
    """Histograms (values and variances) and cutflows of train, val and test, each multiplied back
    by its fraction (its square for variances), add up to those of the full run."""
    job = _job(tmp_path, toy_models, {"qcd": ("background", embedded_file("qcd.root")),
                                      "svj_mz2000_rinv0.3": ("signal", embedded_file("svj_mz2000_rinv0.3.root"))})
    full, _ = run_processor(load_job(job))
    parts = {name: run_processor(load_job(job, _subset(name)))[0] for name in splits.SPLIT_NAMES}
    for hname in ("xy_mt", "mt_abcd", "met", "lund_plane"):
        ref = full["hists"][hname].view(flow=True)
        value = sum(f * parts[s]["hists"][hname].view(flow=True).value for s, f in zip(splits.SPLIT_NAMES, FRACTIONS))
        var = sum(f**2 * parts[s]["hists"][hname].view(flow=True).variance
                  for s, f in zip(splits.SPLIT_NAMES, FRACTIONS))
        assert ref.value.sum() > 0
        np.testing.assert_allclose(value, ref.value, rtol=1e-9, atol=1e-9 * abs(ref.value).max(), err_msg=hname)
        np.testing.assert_allclose(var, ref.variance, rtol=1e-9, atol=1e-9 * abs(ref.variance).max(), err_msg=hname)
    for ds in full["cutflow"]:
        raw = sum(parts[s]["cutflow"][ds]["raw"] for s in splits.SPLIT_NAMES)
        assert np.array_equal(raw, full["cutflow"][ds]["raw"])
        weighted = sum(f * parts[s]["cutflow"][ds]["weighted"] for s, f in zip(splits.SPLIT_NAMES, FRACTIONS))
        np.testing.assert_allclose(weighted, full["cutflow"][ds]["weighted"], rtol=1e-9)
        for s in splits.SPLIT_NAMES:  # every subset is a real, partial one
            c = parts[s]["counts"][ds]
            assert 0 < c["not_in_subset"] < c["events"] == full["counts"][ds]["events"]
            assert c["events"] == parts[s]["cutflow"][ds]["raw"][0] + c["not_in_subset"]
        # the histograms agree with the (scaled) weighted cutflow; parent-grouped errors stay complete
        assert parts["test"]["hists"]["xy_mt"][{"dataset": ds}].sum(flow=True).value == pytest.approx(
            parts["test"]["cutflow"][ds]["weighted"][-1], rel=1e-12)
        assert parts["test"]["parent_errors"][ds]["complete"]
    # each subset's yields estimate the full sample's, within the sampling error of a fraction f of the
    # parents: sd/yield = sqrt((1/f - 1) sum_p W_p^2) / sum_p W_p over the full run's parents (the
    # embedded QCD's yield sits in a few real-MET parents: N_eff ~15, so a fixed x2 band would not hold)
    for s, f in zip(splits.SPLIT_NAMES, FRACTIONS):
        for ds, rec in full["parent_fills"].items():
            _, inv = np.unique(np.asarray(rec["key"]), return_inverse=True)
            w_parent = np.bincount(inv.ravel(), weights=np.asarray(rec["weight"], np.float64))
            sd = np.sqrt((1 / f - 1) * (w_parent**2).sum()) / w_parent.sum()
            ratio = (parts[s]["hists"]["xy_mt"][{"dataset": ds}].sum(flow=True).value
                     / full["hists"]["xy_mt"][{"dataset": ds}].sum(flow=True).value)
            assert abs(ratio - 1) < 4 * sd, (s, ds, ratio, sd)
    assert set(full["parent_fills"]) == {"qcd", "svj_mz2000_rinv0.3"}

    # small chunks, many of them without an event of the subset: the same output
    small, _ = run_processor(with_executor(load_job(job, _subset("test")), chunksize=7))
    assert_same_output(parts["test"], small)
    assert small["counts"]["svj_mz2000_rinv0.3"]["chunks_without_selected"] > 0


def test_bad_event_subset_is_refused(tmp_path, toy_models):
    job = _job(tmp_path, toy_models, {"qcd": ("background", embedded_file("qcd.root"))})
    cfg = load_job(job, {"analysis.event_subset": {"subset": "test"}})
    assert cfg.analysis.event_subset.seed == splits.DEFAULT_SEED
    assert tuple(cfg.analysis.event_subset.fractions) == splits.DEFAULT_FRACTIONS
    assert load_job(job).analysis.event_subset is None
    assert load_job(job, {"analysis.event_subset.subset": "val"}).analysis.event_subset.fraction == 0.2  # --set
    bad = {"subset": ({"subset": "foo"}, "analysis.event_subset.subset"),
           "sum": ({"subset": "test", "fractions": [0.6, 0.3, 0.2]}, "analysis.event_subset.fractions"),
           "zero": ({"subset": "val", "fractions": [0.8, 0.0, 0.2]}, "analysis.event_subset.fractions"),
           "two": ({"subset": "val", "fractions": [0.8, 0.2]}, "analysis.event_subset.fractions"),
           "unknown key": ({"subset": "val", "sed": 3}, "analysis.event_subset.sed"),
           "no subset": ({"seed": 3}, "analysis.event_subset.subset")}
    for value, key in bad.values():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_job(job, {"analysis.event_subset": value})


def test_data_is_refused(tmp_path, toy_models):
    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.settings import DatasetInfo, EventSubset, ProcessorConfig

    job = _job(tmp_path, toy_models, {"qcd": ("background", embedded_file("qcd.root")),
                                      "scouting_2018": ("data", embedded_file("ttbar.root"))})
    load_job(job, {"datasets.scouting_2018.allow_no_lumi_mask": True})  # fine without event_subset
    with pytest.raises(ConfigError, match=r"analysis\.event_subset.*scouting_2018"):
        load_job(job, _subset("test"))
    cfg = ProcessorConfig(lundnet_model=toy_models[0], twin_model=toy_models[1], wp=(0.5, 0.5),
                          event_subset=EventSubset(subset="train"),
                          datasets={"qcd": DatasetInfo(kind="background", xsec=1.0, sumw=1.0),
                                    "scouting_2018": DatasetInfo(kind="data")})
    with pytest.raises(ConfigError, match=r"analysis\.event_subset.*scouting_2018"):
        SVJProcessor(cfg)


def test_provenance_and_summary_record_the_subset(tmp_path, toy_models):
    from svjscout.jobs.provenance import collect
    from svjscout.jobs.report import _config_lines

    job = _job(tmp_path, toy_models, {"qcd": ("background", embedded_file("qcd.root"))})
    assert collect(load_job(job), {}, "t0")["event_subset"] is None
    cfg = load_job(job, _subset("val", seed=7))
    assert collect(cfg, {}, "t0")["event_subset"] == {"subset": "val", "seed": 7, "fractions": list(FRACTIONS)}
    assert any("`val` subset" in line and "1/0.2" in line for line in _config_lines(cfg, {}))
