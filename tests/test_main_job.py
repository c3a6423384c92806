"""``svjscout run`` end to end on the embedded sample (toy ONNX models, iterative executor)."""

import json

import pytest
from click.testing import CliRunner

from svjscout.jobs.cli import cli

pytestmark = pytest.mark.slow  # every test shares one run of the whole main job (module fixture run_dir, ~100 s)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, toy_models):
    out = tmp_path_factory.mktemp("run")
    from svjscout.jobs.config import load_job
    from svjscout.jobs.main_job import run_job

    cfg = load_job(None, {"analysis.lundnet_model": toy_models[0], "analysis.twin_model": toy_models[1],
                          "executor.name": "iterative", "executor.chunksize": 100000,
                          "datacards.formats": ["combine", "pyhf"]})
    run_job(cfg, out, progress=False)
    return out


def test_outputs_exist(run_dir):
    for name in ("summary.md", "histograms.coffea", "histograms.root", "cutflow.json", "scan.csv",
                 "limits.json", "closure_SP.pdf", "closure_VP.png", "mt_SP_regionB.png", "mt_VP_regionB.pdf",
                 "xy_plane_SP_background.png", "control_met.png", "lund_plane_signal.png", "scan_rule_failures.png",
                 "limit_map_exp0.pdf", "datacards/index.json"):
        assert (run_dir / name).exists(), name
    cards = sorted(run_dir.glob("datacards/*/*.txt"))
    assert len(cards) == 3
    # datacards.formats [combine, pyhf]: a workspace beside every card, listed in index.json and the manifest
    index = json.loads((run_dir / "datacards" / "index.json").read_text())
    manifest = (run_dir / "manifest.json").read_text()
    assert sorted(index["workspaces"]) == sorted(m["workspace"]["path"] for m in index["points"].values())
    for rel in index["workspaces"]:
        assert (run_dir / "datacards" / rel).is_file() and f"datacards/{rel}" in manifest, rel
    assert "pyhf workspace `workspace.json` (3" in (run_dir / "summary.md").read_text()


def test_limits_and_summary(run_dir):
    limits = json.loads((run_dir / "limits.json").read_text())
    assert set(limits) == {"svj_mz1500_rinv0.3", "svj_mz2000_rinv0.3", "svj_mz3000_rinv0.5"}
    for lim in limits.values():
        bands = [lim[k] for k in ("exp-2", "exp-1", "exp0", "exp+1", "exp+2")]
        assert all(b > 0 for b in bands) and bands == sorted(bands)
        assert lim["obs"] is None  # Asimov cards: no observed limit
    summary = (run_dir / "summary.md").read_text()
    for section in ("## Cutflow", "## Working point", "## Closure per fit bin", "## Expected limits",
                    "## Non-closure in the cards", "## Fit validation"):
        assert section in summary
    # the cutflow starts from the events generated (the files' Runs genEventCount, read here directly)
    import uproot

    from svjscout.jobs.config import load_job
    cfg = load_job(None, {})
    for ds in ("qcd", "svj_mz2000_rinv0.3"):
        n_gen = 0
        for f in cfg.files(ds):
            with uproot.open(f) as root:
                n_gen += int(root["Runs"]["genEventCount"].array(library="np").sum())
        cutflow = summary.split("## Cutflow", 1)[1].splitlines()
        row = next(line for line in cutflow if line.startswith(f"| {ds} | "))
        assert row.split(" | ")[1].split(" / ")[0] == str(n_gen), row
    # which corrections and data-quality stages acted (our simulation: identity JEC, emulated trigger)
    assert "Corrections (docs/corrections.md): era `svjscout_sim`" in summary
    assert "Data quality (docs/dataquality.md): " in summary and "hlt_emulated = " in summary
    # the verdict heads the summary and is in every limit and card: the embedded sample backs no point
    index = json.loads((run_dir / "datacards" / "index.json").read_text())
    assert summary.splitlines()[2].startswith("**Verdict: " + ("backed" if index["backed"] else "UNBACKED"))
    assert all(lim["backed"] == index["backed"] for lim in limits.values())
    for card in run_dir.glob("datacards/*/datacard.txt"):
        assert card.read_text().startswith("# UNBACKED: ") != index["backed"]


def test_datacards_verb_writes_the_run_cards_byte_for_byte(run_dir, tmp_path):
    """``svjscout datacards`` on a run's histograms.coffea: the same working point, half of the MC,
    settings (provenance.json) and signal systematics, so the same bytes; its SHA-256 in index.json."""
    import hashlib

    res = CliRunner().invoke(cli, ["datacards", str(run_dir / "histograms.coffea"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    index = json.loads((run_dir / "datacards" / "index.json").read_text())
    for point, meta in index["points"].items():
        run_card = (run_dir / "datacards" / meta["card"]).read_bytes()
        assert (tmp_path / "datacards" / meta["card"]).read_bytes() == run_card, point
        assert meta["sha256"] == hashlib.sha256(run_card).hexdigest()


def test_unbacked_point_writes_no_cards_and_exits_3(run_dir, tmp_path):
    """Without allow_unbacked, a point the MC does not back gets no card, one paragraph and exit code 3."""
    import subprocess
    import sys

    index = json.loads((run_dir / "datacards" / "index.json").read_text())
    if index["backed"]:
        pytest.skip("the toy run's working point is backed: nothing to refuse")
    proc = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "datacards", str(run_dir / "histograms.coffea"),
                           "--out", str(tmp_path), "--no-allow-unbacked"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "No datacards at the working point" in proc.stderr and "--allow-unbacked" in proc.stderr
    assert not (tmp_path / "datacards").exists()


def test_validation_stage(run_dir):
    res = json.loads((run_dir / "validation" / "validation.json").read_text())
    assert set(res["points"]) == {"svj_mz1500_rinv0.3", "svj_mz2000_rinv0.3", "svj_mz3000_rinv0.5"}
    for p in res["points"].values():
        assert [i["toys"] for i in p["injection"]][:2] == [20, 20] and p["impacts"]["nuisances"]
    assert len(res["wp_stability"]) == 9
    vp = res["gof"]["VP"]  # the toy job's VP has empty regions: then the GoF says why it has no card
    assert (run_dir / "validation" / "cards" / "VP" / "datacard.txt").is_file() or "VP" in vp["error"]


def test_cards_validate(run_dir):
    from svjscout.datacards import parse_datacard, validate_datacard

    for card in run_dir.glob("datacards/*/*.txt"):
        assert validate_datacard(parse_datacard(card), raise_on_error=False) == []


def test_cli_help_for_every_verb():
    runner = CliRunner()
    for verb in (["generate"], ["process"], ["run"], ["scan"], ["datacards"], ["limits"], ["validate"],
                 ["train", "lundnet"], ["train", "twin"]):
        res = runner.invoke(cli, [*verb, "--help"])
        assert res.exit_code == 0, (verb, res.output)
        assert "Usage" in res.output
