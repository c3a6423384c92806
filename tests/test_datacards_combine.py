"""Collecting real Combine outputs and the combine_limits.sh wrapper (svjscout.datacards.combine)."""

import os
import pathlib
import subprocess

import numpy as np
import pytest
import uproot

from svjscout.core.exceptions import DatacardError, InputFileError
from svjscout.datacards import collect_combine_limits, read_limit_file

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "jobs" / "combine_limits.sh"


def _fake_output(path, values, quantiles):
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        f["limit"] = {"limit": np.asarray(values, dtype=np.float64),
                      "quantileExpected": np.asarray(quantiles, dtype=np.float32)}


def _index(cards, points):
    """A datacards/index.json listing ``points`` (with their card files), as the writer makes it."""
    import json

    for p in points:
        (cards / p).mkdir(parents=True, exist_ok=True)
        (cards / p / "datacard.txt").write_text("imax 1\n")
    (cards / "index.json").write_text(json.dumps(
        {"cards_dir": str(cards), "points": {p: {"card": f"{p}/datacard.txt"} for p in points},
         "cards": [f"{p}/datacard.txt" for p in points]}))


def test_collect_combine_outputs(tmp_path):
    cards = tmp_path / "datacards"
    _index(cards, ["svj_mz2000_rinv0.3", "svj_mz3000_rinv0.3"])
    q = [0.025, 0.16, 0.5, 0.84, 0.975, -1.0]
    _fake_output(cards / "svj_mz2000_rinv0.3" / "higgsCombine.svj_mz2000_rinv0.3.AsymptoticLimits.mH120.root",
                 [0.1, 0.2, 0.3, 0.45, 0.6, 0.33], q)
    _fake_output(cards / "svj_mz3000_rinv0.3" / "higgsCombine.svj_mz3000_rinv0.3.AsymptoticLimits.mH120.root",
                 [1.0, 2.0, 3.0, 4.0, 5.0], q[:5])
    out = tmp_path / "limits_combine.json"
    lim = collect_combine_limits(tmp_path, out=out)
    assert lim["svj_mz2000_rinv0.3"] == pytest.approx(
        {"exp-2": 0.1, "exp-1": 0.2, "exp0": 0.3, "exp+1": 0.45, "exp+2": 0.6, "obs": 0.33})
    assert lim["svj_mz3000_rinv0.3"]["obs"] is None and lim["svj_mz3000_rinv0.3"]["exp0"] == 3.0
    assert out.is_file()


def test_bad_files_are_named(tmp_path):
    p = tmp_path / "x.root"
    with uproot.recreate(p) as f:
        f["other"] = {"a": np.zeros(2)}
    with pytest.raises(InputFileError, match="x.root.*limit"):
        read_limit_file(p)
    q = tmp_path / "junk.root"
    q.write_bytes(b"not root")
    with pytest.raises(InputFileError, match="junk.root"):
        read_limit_file(q)
    with pytest.raises(DatacardError, match="index.json"):
        collect_combine_limits(tmp_path)
    _index(tmp_path / "datacards", ["svj_a"])
    with pytest.raises(DatacardError, match=r"no Combine output.*svj_a.*combine_limits.sh"):
        collect_combine_limits(tmp_path)


def test_collectors_read_only_the_current_index(tmp_path):
    """A re-used folder: a point of an earlier run and a Combine output older than its card."""
    from svjscout.datacards.limits import _cards_from

    cards = tmp_path / "datacards"
    q = [0.025, 0.16, 0.5, 0.84, 0.975]
    _fake_output(cards / "svj_old" / "higgsCombine.svj_old.AsymptoticLimits.mH120.root", [9, 9, 9, 9, 9], q)
    (cards / "svj_old" / "datacard.txt").write_text("imax 1\n")  # a card of an earlier run, not in the index
    out_new = cards / "svj_new" / "higgsCombine.svj_new.AsymptoticLimits.mH120.root"
    _fake_output(out_new, [1, 2, 3, 4, 5], q)
    _index(cards, ["svj_new"])  # the current card is written after that output: the output is stale
    card_ns = (cards / "svj_new" / "datacard.txt").stat().st_mtime_ns
    os.utime(out_new, ns=(card_ns - 10**9, card_ns - 10**9))  # 1 s older than the card, whatever the clock's resolution
    assert list(_cards_from(tmp_path)) == ["svj_new"]
    with pytest.raises(DatacardError, match=r"stale.*svj_new"):
        collect_combine_limits(tmp_path)
    os.utime(out_new)  # Combine ran on the current card
    assert list(collect_combine_limits(tmp_path)) == ["svj_new"]
    (cards / "index.json").unlink()
    with pytest.raises(DatacardError, match="index.json"):
        _cards_from(tmp_path)


def test_script_exits_3_without_combine(tmp_path):
    (tmp_path / "datacards" / "p").mkdir(parents=True)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 3 and "not on PATH" in r.stderr
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "AsymptoticLimits" in r.stdout


@pytest.mark.slow
def test_script_runs_fake_combine_and_collects(tmp_path):
    import json
    import sys

    # stand-ins for text2workspace.py and combine that write what the real tools write
    template = tmp_path / "template.root"
    _fake_output(template, [1.0, 2.0, 3.0, 4.0, 5.0], [0.025, 0.16, 0.5, 0.84, 0.975])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "text2workspace.py").write_text("#!/bin/sh\ntouch workspace.root\n")
    (bindir / "combine").write_text(
        "#!/bin/bash\nset -e\n"
        "while [[ $# -gt 0 ]]; do case $1 in -n) n=$2; shift;; -m) m=$2; shift;; -M) M=$2; shift;; esac; shift; done\n"
        '[[ "$M" == AsymptoticLimits && -f workspace.root ]]\n'
        f'cp "{template}" "higgsCombine$n.AsymptoticLimits.mH$m.root"\n'
        'for q in " 2.5:1.0000" "16.0:2.0000" "50.0:3.0000" "84.0:4.0000" "97.5:5.0000"; do\n'
        '  echo "Expected ${q%%:*}%: r < ${q#*:}"; done\n'
    )
    for p in bindir.iterdir():
        p.chmod(0o755)
    points = ("svj_mz2000_rinv0.3", "svj_mz3000_rinv0.5")
    _index(tmp_path / "out" / "datacards", points)
    stale = tmp_path / "out" / "datacards" / "svj_stale"  # not in the index: must not be run
    stale.mkdir()
    (stale / "datacard.txt").write_text("imax 1\n")
    # a plain Combine shell: no svjscout on PATH and a Python that cannot import svjscout
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin", "PYTHON": "/usr/bin/python3", "PYTHONPATH": ""}
    r = subprocess.run(["/usr/bin/python3", "-c", "import svjscout"], capture_output=True, env=env, cwd=tmp_path)
    assert r.returncode != 0, "the system python must not see svjscout for this test to mean anything"
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, env=env,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 point(s), 0 failed" in r.stdout and "svjscout limits" in r.stdout
    assert not list(stale.glob("higgsCombine*"))
    for point in points:
        assert (tmp_path / "out" / "datacards" / point / f"higgsCombine.{point}.AsymptoticLimits.mH120.root").is_file()
    # then, in the svjscout environment
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "limits", str(tmp_path / "out"), "--from-combine",
                        "--no-plots"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lim = json.loads((tmp_path / "out" / "limits.json").read_text())
    assert sorted(lim) == sorted(points)
    assert lim["svj_mz3000_rinv0.5"] == {"exp-2": 1.0, "exp-1": 2.0, "exp0": 3.0, "exp+1": 4.0, "exp+2": 5.0,
                                         "obs": None}
