"""Card integrity (SHA-256 in index.json), where `svjscout limits` writes, its summary.md section, and
`--from-combine` never storing nulls (svjscout.datacards.integrity, jobs/commands_datacards.py)."""

import hashlib
import json

import click
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from svjscout.core.exceptions import DatacardError
from svjscout.datacards.integrity import card_sha256, check_cards
from svjscout.jobs.commands_datacards import limits_cmd, validate_cmd

CARD = """imax 1
jmax 1
kmax 1
---
bin b1
observation {b}
---
bin b1 b1
process sig bkg
process 0 1
rate {s} {b}
---
bu lnN - 1.1
"""

POINTS = {"svj_mz2000_rinv0.3": (8.0, 40.0), "svj_mz3000_rinv0.3": (3.0, 40.0)}


def _run_dir(tmp_path, with_digest=True, summary=True):
    """A run folder as `svjscout run` leaves it: DIR/datacards/POINT/datacard.txt, index.json (with each
    card's SHA-256 computed here with hashlib), DIR/summary.md."""
    run = tmp_path / "run"
    cards = run / "datacards"
    points = {}
    for point, (s, b) in POINTS.items():
        (cards / point).mkdir(parents=True)
        text = CARD.format(s=s, b=b)
        (cards / point / "datacard.txt").write_text(text)
        points[point] = {"card": f"{point}/datacard.txt"}
        if with_digest:
            points[point]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (cards / "index.json").write_text(json.dumps({"cards_dir": str(cards), "points": points,
                                                  "cards": [p["card"] for p in points.values()]}))
    if summary:
        (run / "summary.md").write_text("# Run summary\n\n## Limits\n\nfrom the run\n\n## Closure\n\ntext\n")
    return run


def _group():
    return click.Group(commands=[limits_cmd, validate_cmd])


def test_sha256_of_the_bytes(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"imax 1\n")
    assert card_sha256(p) == hashlib.sha256(b"imax 1\n").hexdigest()


def test_edited_card_refused_unless_accepted(tmp_path):
    run = _run_dir(tmp_path)
    assert set(check_cards(run).values()) == {"ok"}
    card = run / "datacards" / "svj_mz3000_rinv0.3" / "datacard.txt"
    card.write_text(card.read_text().replace("bu lnN - 1.1", "bu lnN - 1.05"))
    with pytest.raises(DatacardError, match=r"svj_mz3000_rinv0.3/datacard.txt.*--accept-edited-cards"):
        check_cards(run)
    with pytest.raises(DatacardError, match="svj_mz3000"):  # the card alone, too
        check_cards(card)
    assert check_cards(run, accept_edited=True)["svj_mz3000_rinv0.3"] == "edited"
    assert check_cards(run / "datacards" / "svj_mz2000_rinv0.3" / "datacard.txt") == {"svj_mz2000_rinv0.3": "ok"}
    # the CLI: non-zero exit naming the card, no limits.json; accepted with the flag
    r = CliRunner().invoke(_group(), ["limits", str(run), "--no-plots"])
    assert r.exit_code != 0 and "svj_mz3000_rinv0.3/datacard.txt" in str(r.exception)
    assert not (run / "limits.json").exists()
    r = CliRunner().invoke(_group(), ["validate", str(run)])
    assert r.exit_code != 0 and "svj_mz3000_rinv0.3/datacard.txt" in str(r.exception)
    r = CliRunner().invoke(_group(), ["limits", str(run), "--no-plots", "--accept-edited-cards"])
    assert r.exit_code == 0, r.output
    assert sorted(json.loads((run / "limits.json").read_text())) == sorted(POINTS)


def test_cards_without_digest_accepted_with_warning(tmp_path, caplog):
    run = _run_dir(tmp_path, with_digest=False)
    assert set(check_cards(run).values()) == {"unrecorded"}
    assert "SHA-256" in caplog.text


@pytest.mark.parametrize("arg", ["run", "datacards", "index"])
def test_limits_written_where_run_writes_and_summary_updated(tmp_path, arg):
    run = _run_dir(tmp_path)
    target = {"run": run, "datacards": run / "datacards", "index": run / "datacards" / "index.json"}[arg]
    r = CliRunner().invoke(_group(), ["limits", str(target), "--no-plots"])
    assert r.exit_code == 0, r.output
    lim = json.loads((run / "limits.json").read_text())
    assert sorted(lim) == sorted(POINTS) and not (run / "datacards" / "limits.json").exists()
    text = (run / "summary.md").read_text()
    assert text.count("## Limits recomputed") == 1 and f"svjscout limits {target}" in text and "UTC" in text
    assert "## Closure" in text and text.index("## Closure") < text.index("## Limits recomputed")
    assert f"{lim['svj_mz2000_rinv0.3']['exp0']:.4g}" in text
    # a second run replaces the section instead of adding one
    r = CliRunner().invoke(_group(), ["limits", str(target), "--no-plots"])
    assert r.exit_code == 0 and (run / "summary.md").read_text().count("## Limits recomputed") == 1


def test_no_summary_no_section(tmp_path):
    run = _run_dir(tmp_path, summary=False)
    r = CliRunner().invoke(_group(), ["limits", str(run), "--no-plots"])
    assert r.exit_code == 0, r.output
    assert not (run / "summary.md").exists() and (run / "limits.json").is_file()


def _combine_output(path, values, quantiles):
    with uproot.recreate(path) as f:
        f["limit"] = {"limit": np.asarray(values, dtype=np.float64),
                      "quantileExpected": np.asarray(quantiles, dtype=np.float32)}


def test_from_combine_never_overwrites_with_nulls(tmp_path):
    run = _run_dir(tmp_path)
    before = json.dumps({"svj_mz2000_rinv0.3": {"exp0": 1.0}, "svj_mz3000_rinv0.3": {"exp0": 2.0}})
    (run / "limits.json").write_text(before)
    q = [0.025, 0.16, 0.5, 0.84, 0.975]
    _combine_output(run / "datacards" / "svj_mz2000_rinv0.3"
                    / "higgsCombine.svj_mz2000_rinv0.3.AsymptoticLimits.mH120.root",
                    [1, 2, 3, 4, 5], q)
    _combine_output(run / "datacards" / "svj_mz3000_rinv0.3"
                    / "higgsCombine.svj_mz3000_rinv0.3.AsymptoticLimits.mH120.root",
                    [], [])  # Combine's empty tree
    r = CliRunner().invoke(_group(), ["limits", str(run), "--from-combine", "--no-plots"])
    assert r.exit_code != 0
    assert "svj_mz3000_rinv0.3/datacard.txt" in str(r.exception) and "no result" in str(r.exception)
    assert (run / "limits.json").read_text() == before
    assert "Limits recomputed" not in (run / "summary.md").read_text()


def test_recomputed_limits_keep_the_working_point_verdict(tmp_path):
    """`svjscout limits` stamps every entry with index.json's verdict, as `svjscout run` does."""
    run = _run_dir(tmp_path)
    idx_path = run / "datacards" / "index.json"
    idx = json.loads(idx_path.read_text())
    idx.update(backed=False, verdict="UNBACKED: statistics guard (B N_eff 5.4)")
    idx_path.write_text(json.dumps(idx))
    r = CliRunner().invoke(_group(), ["limits", str(run), "--no-plots"])
    assert r.exit_code == 0, r.output
    for v in json.loads((run / "limits.json").read_text()).values():
        assert v["backed"] is False and v["verdict"].startswith("UNBACKED")
