"""A run's output folder (issue 11 items 2, 3, 4, 9): manifest.json, --overwrite/--resume,
provenance.json, one working point for every region-split output, a quiet command line.

Every test plants the fault it guards against (an earlier run in the folder, a stale file in the
manifest, a foreign file, a manifest pointing outside, a changed configuration, a run whose scan
WP differs from analysis.wp) on real processor runs over the embedded sample with the toy models.
The runs are shared through module-scoped fixtures (each ``run_job`` takes a few seconds).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import embedded_file

from svjscout.core.exceptions import SVJScoutError
from svjscout.jobs.outputs import OutputDirError

DATASETS = ("svj_mz2000_rinv0.3", "qcd", "svj_mz3000_rinv0.5")
#: A working point inside the toy models' score range (all scores are > 0.8), so that the regions
#: of every dataset are populated and it differs from what the grid scan chooses.
SPLIT_WP = (0.975, 0.925)  # all four regions populated by the toy models on the embedded sample


def _job_yaml(path: Path, toy_models, wp=(0.5, 0.5)) -> Path:
    """The job of conftest's ``small_job`` (three embedded datasets, toy models, iterative executor)."""
    path.write_text(
        "datasets:\n"
        + "".join(f"  {ds}: {{kind: {'background' if ds.startswith('qcd') else 'signal'}, "
                  f"files: ['{embedded_file(ds + '.root')}']}}\n" for ds in DATASETS)
        + "analysis:\n"
        f"  lundnet_model: {toy_models[0]}\n"
        f"  twin_model: {toy_models[1]}\n"
        f"  wp: [{wp[0]}, {wp[1]}]\n"
        "executor: {name: iterative, chunksize: 10000}\n"
        "datacards: {allow_unbacked: true}\n"  # the embedded sample backs no working point
    )
    return path


def _load(tmp_path_factory, toy_models, wp=(0.5, 0.5)):
    from svjscout.jobs.config import load_job

    return load_job(_job_yaml(tmp_path_factory.mktemp("job") / "job.yaml", toy_models, wp))


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _with_rt_min(cfg, rt_min: float):
    """A copy of ``cfg`` with analysis.cuts.rt_min changed (the models are nested: copy each level)."""
    cuts = cfg.analysis.cuts.model_copy(update={"rt_min": rt_min})
    return cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"cuts": cuts})})


# ---------------------------------------------------------------------------------------------
# item 2: a re-used output folder
# ---------------------------------------------------------------------------------------------

STALE = os.path.join("datacards", "svj_old_point", "datacard.txt")


@pytest.fixture(scope="module")
def reused(tmp_path_factory, toy_models):
    """One folder, three attempts: a run; a second run (refused); a planted stale card; --overwrite.

    A foreign ``notes.txt`` is in the folder from before the first run.
    """
    from svjscout.jobs.main_job import run_job

    cfg = _load(tmp_path_factory, toy_models)
    out = tmp_path_factory.mktemp("reused")
    (out / "notes.txt").write_text("my own notes, not svjscout's\n")
    run_job(cfg, out, progress=False)
    first = _manifest(out)
    before_refusal = _snapshot(out)
    refusal = None
    try:
        run_job(cfg, out, progress=False)
    except OutputDirError as err:
        refusal = err
    after_refusal = _snapshot(out)
    # plant: a card of an earlier run's signal point that this run does not write
    (out / STALE).parent.mkdir(parents=True)
    (out / STALE).write_text("imax 1\n")
    planted = {**first, "files": [*first["files"], STALE], "dirs": [*first["dirs"], os.path.dirname(STALE)]}
    (out / "manifest.json").write_text(json.dumps(planted))
    run_job(cfg, out, progress=False, overwrite=True)
    return {"cfg": cfg, "out": out, "first": first, "planted": planted, "second": _manifest(out),
            "refusal": refusal, "before_refusal": before_refusal, "after_refusal": after_refusal}


def test_output_dir_error_is_an_svjscout_error():
    assert issubclass(OutputDirError, SVJScoutError)


@pytest.mark.slow
def test_first_run_manifest_lists_what_it_wrote(reused):
    first = reused["first"]
    assert first["status"] == "complete"
    for name in ("summary.md", "histograms.root", "histograms.coffea", "provenance.json",
                 os.path.join("datacards", "index.json")):
        assert name in first["files"], name
    assert "notes.txt" not in first["files"]  # in the folder before the run: not the run's
    assert "manifest.json" not in first["files"]


@pytest.mark.slow
def test_second_run_refused_and_folder_untouched(reused):
    err = reused["refusal"]
    assert isinstance(err, OutputDirError), "a second run into a folder with an earlier run's outputs must be refused"
    assert "--overwrite" in str(err)
    assert reused["after_refusal"] == reused["before_refusal"]  # nothing removed, nothing written


@pytest.mark.slow
def test_overwrite_removes_the_earlier_runs_files_only(reused):
    out, planted, second = reused["out"], reused["planted"], reused["second"]
    assert not (out / STALE).exists(), "a file of the earlier manifest that this run does not write must be removed"
    assert not (out / os.path.dirname(STALE)).exists()  # its folder, listed and now empty
    assert STALE in second["removed_before_run"]
    for rel in planted["files"]:  # what the earlier run listed exists now only if this run wrote it
        assert (out / rel).exists() == (rel in second["files"]), rel
    assert (out / "notes.txt").read_text() == "my own notes, not svjscout's\n"


@pytest.mark.slow
def test_overwrite_manifest_lists_what_the_second_run_wrote(reused):
    out, second = reused["out"], reused["second"]
    assert second["status"] == "complete"
    for name in ("summary.md", "histograms.root", "provenance.json", os.path.join("datacards", "index.json")):
        assert name in second["files"], name
    assert STALE not in second["files"] and "notes.txt" not in second["files"]
    on_disk = set(_snapshot(out)) - {"manifest.json", "notes.txt"}
    assert set(second["files"]) == on_disk  # every file of the folder but the foreign one, and only those
    assert second["digest"] == reused["first"]["digest"]


@pytest.mark.slow
def test_failed_run_manifest_lists_its_files(small_job, tmp_path):
    """Plant: a file named ``datacards`` makes the datacards stage fail after histograms and scan."""
    from svjscout.jobs.main_job import run_job

    out = tmp_path / "out"
    out.mkdir()
    (out / "datacards").write_text("a file where the cards' folder goes\n")
    with pytest.raises(OSError):
        run_job(small_job, out, progress=False)
    manifest = _manifest(out)
    assert manifest["status"].startswith("failed")
    written = set(_snapshot(out)) - {"manifest.json", "datacards"}
    assert {"histograms.coffea", "histograms.root", "scan.csv", "provenance.json"} <= written
    assert set(manifest["files"]) == written  # what the failed run left is listed, so --overwrite can remove it
    with pytest.raises(OutputDirError, match="--overwrite"):
        run_job(small_job, out, progress=False)


def test_resume_refused_after_model_changed(small_job, tmp_path):
    """The digest covers the models' contents: a model rewritten in place is another configuration."""
    from svjscout.jobs.main_job import run_job
    from svjscout.jobs.outputs import RunOutputs
    from svjscout.jobs.provenance import run_digest

    model = tmp_path / "lundnet_copy.onnx"
    shutil.copyfile(small_job.analysis.lundnet_model, model)
    cfg = small_job.model_copy(update={"analysis": small_job.analysis.model_copy(update={"lundnet_model": str(model)})})
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("# earlier run\n")
    (out / "manifest.json").write_text(json.dumps({"job": "old", "digest": run_digest(cfg), "status": "complete",
                                                   "files": ["summary.md"], "dirs": []}))
    shutil.copytree(out, tmp_path / "control")  # control: before the change, the same digest is accepted
    RunOutputs(tmp_path / "control", run_digest(cfg), "x", resume=True).prepare()
    with open(model, "ab") as f:  # "retrained": same path, other bytes
        f.write(b"\0")
    with pytest.raises(OutputDirError, match="--resume"):
        run_job(cfg, out, progress=False, resume=True)
    assert (out / "summary.md").exists()


@pytest.mark.parametrize("mode", [{}, {"overwrite": True}, {"resume": True}])
def test_outputs_without_manifest_refused(small_job, tmp_path, mode):
    from svjscout.jobs.main_job import run_job

    out = tmp_path / "old"
    out.mkdir()
    (out / "summary.md").write_text("# an older svjscout run\n")
    (out / "histograms.coffea").write_bytes(b"not really coffea")
    before = _snapshot(out)
    with pytest.raises(OutputDirError) as err:
        run_job(small_job, out, progress=False, **mode)
    assert "manifest.json" in str(err.value)
    assert _snapshot(out) == before
    assert not (out / "manifest.json").exists()


def test_overwrite_and_resume_together_refused(small_job, tmp_path):
    from svjscout.jobs.main_job import run_job

    with pytest.raises(OutputDirError, match="--overwrite or --resume"):
        run_job(small_job, tmp_path / "out", progress=False, overwrite=True, resume=True)


@pytest.fixture(scope="module")
def resumed(reused, tmp_path_factory):
    """A copy of the reused folder, continued with ``resume=True`` and the same configuration."""
    from svjscout.jobs.main_job import run_job

    out = tmp_path_factory.mktemp("resume") / "out"
    shutil.copytree(reused["out"], out)
    before = _manifest(out)
    run_job(reused["cfg"], out, progress=False, resume=True)
    return {"out": out, "before": before, "after": _manifest(out)}


@pytest.mark.slow
def test_resume_same_configuration_accepted(resumed):
    out, before, after = resumed["out"], resumed["before"], resumed["after"]
    assert after["status"] == "complete"
    assert after["digest"] == before["digest"]
    for name in ("summary.md", "histograms.root", "provenance.json", os.path.join("datacards", "index.json")):
        assert name in after["files"] and (out / name).is_file(), name
    assert (out / "notes.txt").exists()


@pytest.mark.slow
def test_resume_changed_configuration_refused(reused, tmp_path):
    from svjscout.jobs.main_job import run_job
    from svjscout.jobs.provenance import run_digest

    out = tmp_path / "out"
    shutil.copytree(reused["out"], out)
    changed = _with_rt_min(reused["cfg"], 0.3)
    assert changed.analysis.cuts.rt_min == 0.3 and reused["cfg"].analysis.cuts.rt_min != 0.3
    assert run_digest(changed) != run_digest(reused["cfg"])
    before = _snapshot(out)
    with pytest.raises(OutputDirError) as err:
        run_job(changed, out, progress=False, resume=True)
    assert "--resume" in str(err.value)
    assert _snapshot(out) == before


def _outside_folder(tmp_path: Path) -> tuple[Path, Path]:
    """(out, outside.txt): a folder with an earlier run's summary.md, and a file beside it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("# earlier run\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not svjscout's\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "outside.txt").write_text("not svjscout's either\n")
    (out / "link").symlink_to(tmp_path / "elsewhere")
    return out, outside


def _write_manifest(out: Path, files: list[str]) -> None:
    (out / "manifest.json").write_text(json.dumps(
        {"svjscout": "0.1.0", "job": "old", "digest": "0000", "status": "complete", "created": "2020-01-01T00:00:00Z",
         "command": None, "files": files, "dirs": [], "removed_before_run": []}))


@pytest.mark.parametrize("entry", ["../outside.txt", "ABSOLUTE", "link/outside.txt"])
def test_manifest_pointing_outside_refused(small_job, tmp_path, entry):
    from svjscout.jobs.main_job import run_job

    out, outside = _outside_folder(tmp_path)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    target = (out / entry).resolve()
    _write_manifest(out, [entry, "summary.md"])
    with pytest.raises(OutputDirError) as err:
        run_job(small_job, out, progress=False, overwrite=True)
    assert "outside" in str(err.value)
    assert target.is_file() and target.read_text().startswith("not svjscout's")


def test_manifest_dirs_pointing_outside_refused(tmp_path):
    from svjscout.jobs.outputs import RunOutputs

    out, _ = _outside_folder(tmp_path)
    (tmp_path / "empty_sibling").mkdir()  # someone else's empty folder beside the output folder
    _write_manifest(out, ["summary.md"])
    manifest = _manifest(out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "dirs": ["../empty_sibling"]}))
    try:
        RunOutputs(out, "digest", "job", overwrite=True).prepare()
    except OutputDirError:
        pass  # refusing is fine too
    assert (tmp_path / "empty_sibling").is_dir(), "a manifest must not remove folders outside the output folder"


def test_refused_manifest_removes_nothing(small_job, tmp_path):
    from svjscout.jobs.main_job import run_job

    out, _ = _outside_folder(tmp_path)
    _write_manifest(out, ["summary.md", "../outside.txt"])
    with pytest.raises(OutputDirError):
        run_job(small_job, out, progress=False, overwrite=True)
    assert (out / "summary.md").exists(), "a refused --overwrite must leave the folder as it was"


# ---------------------------------------------------------------------------------------------
# items 2, 4, 9 through the command line
# ---------------------------------------------------------------------------------------------

def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "SVJSCOUT_NO_PROGRESS": "1"})


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, toy_models):
    """`svjscout run` three times into one folder: with --set, again (refused), with --overwrite."""
    tmp = tmp_path_factory.mktemp("cli")
    job = _job_yaml(tmp / "job.yaml", toy_models)
    out = tmp / "out"
    first = _cli("run", str(job), "--out", str(out), "--set", "analysis.cuts.rt_min=0.3")
    files = {name: (out / name).read_text() if (out / name).exists() else None
             for name in ("provenance.json", "summary.md", "manifest.json")}
    second = _cli("run", str(job), "--out", str(out))
    third = _cli("run", str(job), "--out", str(out), "--overwrite")
    return {"job": job, "out": out, "first": first, "second": second, "third": third, "files": files}


@pytest.mark.slow
def test_cli_second_run_exits_2_with_one_line(cli_runs):
    first, second, third = cli_runs["first"], cli_runs["second"], cli_runs["third"]
    assert first.returncode == 0, first.stderr
    assert second.returncode == 2, second.stderr
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("svjscout: error: "), second.stderr
    assert "--overwrite" in lines[0]
    assert third.returncode == 0, third.stderr
    assert _manifest(cli_runs["out"])["status"] == "complete"
    prov = json.loads((cli_runs["out"] / "provenance.json").read_text())
    assert prov["overrides"] == {}  # the third run's, not the first's


@pytest.mark.slow
def test_cli_quiet_without_verbose(cli_runs):
    for res in (cli_runs["first"], cli_runs["third"]):
        assert "FastJet release" not in res.stderr + res.stdout
        assert not [ln for ln in res.stderr.splitlines() if ln.startswith("INFO ")], res.stderr


@pytest.mark.slow
def test_cli_provenance(cli_runs):
    import numpy
    import uproot

    from svjscout import __version__
    from svjscout.jobs.config import load_job

    assert cli_runs["first"].returncode == 0, cli_runs["first"].stderr
    prov = json.loads(cli_runs["files"]["provenance.json"])
    manifest = json.loads(cli_runs["files"]["manifest.json"])
    job = cli_runs["job"]
    assert prov["svjscout"]["version"] == __version__
    assert "run" in prov["command"] and str(job) in prov["command"]
    assert "analysis.cuts.rt_min=0.3" in prov["command"]
    assert prov["overrides"] == {"analysis.cuts.rt_min": 0.3}
    assert prov["config"]["analysis"]["cuts"]["rt_min"] == 0.3
    # the full resolved configuration: every default spelled out
    expected = load_job(job, {"analysis.cuts.rt_min": 0.3}).model_dump(mode="json", by_alias=True)
    assert prov["config"] == json.loads(json.dumps(expected, default=str))
    assert prov["digest"] == manifest["digest"]
    assert prov["environment"]["packages"]["numpy"] == numpy.__version__
    for key, model in (("lundnet", prov["config"]["analysis"]["lundnet_model"]),
                       ("twin", prov["config"]["analysis"]["twin_model"])):
        assert prov["models"][key]["sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest(), key
    files = prov["inputs"]["files"]
    assert sorted(f["path"] for f in files) == sorted(embedded_file(ds + ".root") for ds in DATASETS)
    for f in files:
        assert f["bytes"] == os.path.getsize(f["path"])
        with uproot.open(f["path"]) as root:
            assert f["entries"] == root["Events"].num_entries
        assert Path(f["path"]).name == f["dataset"] + ".root"
    started, finished = (dt.datetime.strptime(prov[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("started", "finished"))
    assert started <= finished


@pytest.mark.slow
def test_cli_summary_shows_overrides_and_cuts(cli_runs):
    summary = cli_runs["files"]["summary.md"]
    assert summary is not None
    assert "analysis.cuts.rt_min" in summary
    cuts = [ln for ln in summary.splitlines() if ln.startswith("Cuts:")]
    assert len(cuts) == 1 and "`rt_min` 0.3" in cuts[0], cuts


@pytest.fixture(scope="module")
def dask_process(tmp_path_factory, toy_models):
    """`svjscout process` on a dask LocalCluster (one worker), without and with -v."""
    tmp = tmp_path_factory.mktemp("dask")
    job = _job_yaml(tmp / "job.yaml", toy_models)
    args = ("process", str(job), "--executor", "dask", "--workers", "1")
    return {"quiet": _cli(*args, "--out", str(tmp / "quiet")), "verbose": _cli("-v", *args, "--out", str(tmp / "v")),
            "out": tmp / "quiet"}


@pytest.mark.slow
def test_dask_quiet_without_verbose(dask_process):
    quiet, verbose = dask_process["quiet"], dask_process["verbose"]
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    # -v shows dask's INFO lines, so their absence without it is what the switch does
    assert [ln for ln in verbose.stderr.splitlines() if ln.startswith("INFO distributed")]
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("INFO ")], quiet.stderr
    for res in (quiet, verbose):  # the workers cluster jets too: no banner from them either
        assert "FastJet release" not in res.stderr + res.stdout
    manifest = _manifest(dask_process["out"])
    assert manifest["status"] == "complete"
    assert {"histograms.root", "histograms.coffea", "provenance.json"} <= set(manifest["files"])


# ---------------------------------------------------------------------------------------------
# item 3: one working point for every region-split output
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scan_run(tmp_path_factory, toy_models):
    """A run with analysis.wp = SPLIT_WP that uses the grid scan's WP (which differs from it)."""
    from coffea.util import load

    from svjscout.jobs.main_job import run_job

    cfg = _load(tmp_path_factory, toy_models, SPLIT_WP)
    out = tmp_path_factory.mktemp("scan_run")
    result = run_job(cfg, out, use_scan=True, progress=False)
    return {"cfg": cfg, "out": out, "result": result, "coffea": load(out / "histograms.coffea")}


@pytest.mark.slow
def test_scan_wp_differs_from_analysis_wp(scan_run):
    """Guard: the test of item 3 is meaningful only if the two WPs give different regions."""
    from svjscout.datacards import region_yields

    wp, cfg_wp = tuple(scan_run["result"]["wp"]), tuple(scan_run["cfg"].analysis.wp)
    assert wp != cfg_wp
    xy_mt, datasets = scan_run["coffea"]["hists"]["xy_mt"], scan_run["coffea"]["datasets"]
    for ds in DATASETS:
        at_run = region_yields(xy_mt, datasets, wp, plane="SP", which=[ds]).n
        at_cfg = region_yields(xy_mt, datasets, cfg_wp, plane="SP", which=[ds]).n
        assert not np.allclose(at_run[1], at_cfg[1]), ds  # region B differs for every dataset


@pytest.mark.slow
def test_histograms_root_at_the_run_wp(scan_run):
    import uproot

    from svjscout.datacards import StatInputs, region_yields
    from svjscout.datacards.regions import REGIONS

    wp = tuple(scan_run["result"]["wp"])
    inputs, datasets = StatInputs.from_output(scan_run["coffea"]), scan_run["coffea"]["datasets"]
    with uproot.open(scan_run["out"] / "histograms.root") as f:
        for ds in DATASETS:
            for plane in ("SP", "VP"):
                y = region_yields(inputs.xy_mt, datasets, wp, plane=plane, which=[ds], parents=inputs.parents)
                for k, region in enumerate(REGIONS):
                    th1 = f[f"{ds}/{plane}/{region}"]
                    assert np.allclose(th1.values(), y.n[k], rtol=1e-9, atol=1e-9), (ds, plane, region)
                    assert np.allclose(th1.variances(), y.var[k], rtol=1e-9, atol=1e-9), (ds, plane, region)


@pytest.mark.slow
def test_datacard_signal_rates_equal_histograms_root(scan_run):
    import uproot
    from coffea.util import load

    from svjscout.datacards import parse_datacard
    from svjscout.datacards.regions import REGIONS, region_yields
    from svjscout.datacards.split import split_halves

    out = scan_run["out"]
    index = json.loads((out / "datacards" / "index.json").read_text())
    groups = index["mt_groups"]
    assert index["plane"] == "SP"
    signals = {p["dataset"]: point for point, p in index["points"].items()}
    assert set(signals) == {ds for ds in DATASETS if ds.startswith("svj")}
    # with the scan the cards are quoted on the half of the MC the WP was not chosen on
    output = load(out / "histograms.coffea")
    assert index["provenance"]["split"] and output["wp"]["split"]
    quote = split_halves(output, seed=output["wp"]["split_seed"])["quote"]["hists"]["xy_mt"]
    wp = (index["wp"]["x0"], index["wp"]["y0"])
    with uproot.open(out / "histograms.root") as f:
        for ds, point in signals.items():
            card = parse_datacard(out / "datacards" / index["points"][point]["card"])
            half = np.clip(region_yields(quote, output["datasets"], wp, which=[ds]).n, 0.0, None)
            full = region_yields(output["hists"]["xy_mt"], output["datasets"], wp, which=[ds]).n
            for k, region in enumerate(REGIONS):
                th1 = f[f"{ds}/SP/{region}"].values()
                assert np.allclose(th1, full[k], rtol=1e-6, atol=1e-6)  # histograms.root: the whole sample
                rates = np.array([card.rate(f"SP_{region}_{i}", "sig") for i in range(len(groups))])
                merged = np.array([half[k, g].sum() for g in groups])  # the cards clip negative yields
                assert np.allclose(rates, merged, rtol=1e-6, atol=1e-6), (ds, region, rates, merged)
            assert f[f"{ds}/SP/B"].values().sum() > 0


@pytest.mark.slow
def test_wp_recorded_alike_everywhere(scan_run):
    import uproot

    out, result, output = scan_run["out"], scan_run["result"], scan_run["coffea"]
    x0, y0 = result["wp"]
    index = json.loads((out / "datacards" / "index.json").read_text())
    assert (index["wp"]["x0"], index["wp"]["y0"]) == pytest.approx((x0, y0))
    with uproot.open(out / "histograms.root") as f:
        meta = json.loads(str(f["svjscout_meta"]))
    assert (meta["wp"]["x0"], meta["wp"]["y0"]) == pytest.approx((x0, y0))
    assert (output["wp"]["x0"], output["wp"]["y0"]) == pytest.approx((x0, y0))
    assert output["wp"]["source"] == meta["wp"]["source"] and "scan" in output["wp"]["source"]
    summary = (out / "summary.md").read_text()
    assert f"({x0:.3f}, {y0:.3f})" in summary
    cfg_wp = scan_run["cfg"].analysis.wp
    assert f"({cfg_wp[0]:.3f}, {cfg_wp[1]:.3f})" not in summary
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["working_point"]["x0"], prov["working_point"]["y0"]) == pytest.approx((x0, y0))


@pytest.mark.slow
def test_coffea_mt_abcd_at_the_run_wp(scan_run):
    from svjscout.core.exceptions import HistogramError
    from svjscout.datacards import StatInputs, check_mt_abcd, mt_abcd_at

    output = scan_run["coffea"]
    wp = tuple(scan_run["result"]["wp"])
    mt_abcd, xy_mt = output["hists"]["mt_abcd"], output["hists"]["xy_mt"]
    rebuilt = mt_abcd_at(xy_mt, wp, parents=StatInputs.from_output(output).parents)
    assert np.allclose(mt_abcd.values(), rebuilt.values()) and np.allclose(mt_abcd.variances(), rebuilt.variances())
    check_mt_abcd(mt_abcd, xy_mt, wp)
    with pytest.raises(HistogramError):  # not at analysis.wp, where the processor filled it
        check_mt_abcd(mt_abcd, xy_mt, scan_run["cfg"].analysis.wp)


@pytest.mark.slow
@pytest.mark.parametrize("wp", [(0.5, 0.5), SPLIT_WP])
def test_mt_abcd_at_equals_the_processor_fill(small_job, wp):
    """Independent check: the processor fills mt_abcd event by event at analysis.wp."""
    from svjscout.datacards import StatInputs, check_mt_abcd, mt_abcd_at
    from svjscout.jobs.runner import run_processor

    cfg = small_job.model_copy(update={"analysis": small_job.analysis.model_copy(update={"wp": wp})})
    output, _ = run_processor(cfg)
    direct, xy_mt = output["hists"]["mt_abcd"], output["hists"]["xy_mt"]
    rebuilt = mt_abcd_at(xy_mt, cfg.analysis.wp, parents=StatInputs.from_output(output).parents)
    assert list(rebuilt.axes["dataset"]) == list(direct.axes["dataset"])
    assert list(rebuilt.axes["region"]) == list(direct.axes["region"])
    assert np.allclose(rebuilt.axes["mt"].edges, direct.axes["mt"].edges)
    # region sums come from cumulative sums over the score bins: with pT-hat-biased, resampled QCD
    # the weights span ~10 orders of magnitude, so the agreement is to rounding of the largest entry
    for a, b in ((rebuilt.values(flow=True), direct.values(flow=True)),
                 (rebuilt.variances(flow=True), direct.variances(flow=True))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-13 * np.abs(b).max())
    assert direct.values().sum() > 0
    check_mt_abcd(rebuilt, xy_mt, cfg.analysis.wp)
    check_mt_abcd(direct, xy_mt, cfg.analysis.wp)
    if wp == SPLIT_WP:  # the regions are populated: the comparison is not all-in-one-region
        per_region = direct.values().sum(axis=(0, 1, 3))
        assert (per_region > 0).all(), per_region


def test_summary_reports_lost_workers():
    """A run that lost dask workers says so in summary.md (the scheduler's event log, jobs/runner.py)."""
    from svjscout.jobs.report import _skipped_lines

    lines = _skipped_lines({"executor": {"workers_lost": 1, "lost_workers": ["tcp://127.0.0.1:4321"],
                                         "tasks_rerun": 3}})
    assert any("workers lost during the run: 1 (tcp://127.0.0.1:4321)" in line and "3 task(s)" in line
               for line in lines)
    assert not any("lost" in line for line in _skipped_lines({"executor": {"workers_lost": 0}}))


# ---------------------------------------------------------------------------------------------
# issue 31 item 5: summary.md says when the cards' observation is pseudo-data
# ---------------------------------------------------------------------------------------------

PSEUDO_SEED, PSEUDO_INJECT, PSEUDO_SIGNAL = 5, 2.0, "svj_mz2000_rinv0.3"


@pytest.fixture(scope="module")
def pseudo_run(tmp_path_factory, toy_models):
    """A run whose cards' observation is signal-injected pseudo-data (datacards.pseudo_data)."""
    from svjscout.jobs.main_job import run_job

    cfg = _load(tmp_path_factory, toy_models)
    cards = cfg.datacards.model_copy(update={"pseudo_data": PSEUDO_SEED, "pseudo_inject": PSEUDO_INJECT,
                                             "pseudo_signal": PSEUDO_SIGNAL})
    cfg = cfg.model_copy(update={"datacards": cards})
    out = tmp_path_factory.mktemp("pseudo")
    run_job(cfg, out, progress=False)
    return out


def test_summary_labels_pseudo_data(pseudo_run):
    """The head of summary.md (above the configuration) and a section before the fit validation
    say PSEUDO-DATA with the seed and the injected signal; the VP closure counts it prints are the
    cards' own observation in the validation plane (parsed from a card), not a second bookkeeping."""
    from svjscout.datacards.parser import parse_datacard

    summary = (pseudo_run / "summary.md").read_text()
    head = summary.split("## Configuration")[0]
    assert "PSEUDO-DATA, NOT data" in head, head
    assert f"Seed {PSEUDO_SEED}" in head and f"{PSEUDO_INJECT:g} x {PSEUDO_SIGNAL}" in head, head
    assert "## Observation: PSEUDO-DATA" in summary
    section = summary.split("## Observation: PSEUDO-DATA")[1].split("\n## ")[0]
    assert summary.index("## Observation: PSEUDO-DATA") < summary.index("## Fit validation")
    assert f"The fit validation below fits the PSEUDO-DATA observation (seed {PSEUDO_SEED})" in summary
    index = json.loads((pseudo_run / "datacards" / "index.json").read_text())
    card = parse_datacard(str(pseudo_run / "datacards" / index["cards"][0]))
    obs = dict(zip(card.bins, (float(o) for o in card.observation)))
    vp_b = [v for k, v in sorted(obs.items()) if k.startswith("VP_B_")]
    if vp_b:  # cards with the validation plane: its region B is observed (never blinded)
        printed = [float(ln.split(": B ")[1].split()[0]) for ln in section.splitlines() if ": B " in ln]
        assert printed == vp_b, (printed, vp_b)
    else:  # cards of the signal plane only: the printed B counts are those of index.json's record
        printed = [float(ln.split(": B ")[1].split()[0]) for ln in section.splitlines() if ": B " in ln]
        assert printed == [b["B"] for b in index["pseudo_data"]["vp_closure"]["bins"]]
    assert printed, section


def test_summary_of_an_asimov_run_says_asimov_not_pseudo_data(reused):
    summary = (reused["out"] / "summary.md").read_text()
    assert "PSEUDO-DATA" not in summary
    obs = summary.split("## Observation\n")[1].split("\n## ")[0]
    assert "Asimov" in obs and "no pseudo-data" in obs, obs
