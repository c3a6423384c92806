"""Quick limits against real CMS Combine (skipped unless `combine` and `text2workspace.py` are on PATH).

Combine is run for real here (no stand-in): set it up first, e.g. `source /work/combine-build/env.sh`
(a v10.6.0 build, docs/datacards.md). Each card takes Combine a few seconds.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from conftest import benchmark_module

from svjscout.datacards import card_limits
from svjscout.datacards.limits import combine_band_caps
from svjscout.datacards.parser import parse_text

pytestmark = pytest.mark.skipif(not (shutil.which("combine") and shutil.which("text2workspace.py")),
                                reason="CMS Combine not on PATH")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "jobs" / "combine_limits.sh"
KEYS = ("exp-2", "exp-1", "exp0", "exp+1", "exp+2")

HEAD = """imax {nb}
jmax 1
kmax *
---
"""

CARDS = {
    # one bin, asymmetric lnN on both processes (Combine's smooth interpolation matters)
    "asym": HEAD.format(nb=1) + """bin b1
observation 50
---
bin b1 b1
process sig bkg
process 0 1
rate 10 50
---
bu lnN - 0.97/1.35
su lnN 0.8/1.05 -
""",
    # one bin, signal MC statistics as gmN (N = 3): the upper band is capped by Combine
    "gmn": HEAD.format(nb=1) + """bin b1
observation 20
---
bin b1 b1
process sig bkg
process 0 1
rate 6 20
---
bu lnN - 1.1
sigstat gmN 3 2.0 -
""",
    # ABCD with rateParams, a non-closure lnN on B and asymmetric signal systematics
    "abcd": HEAD.format(nb=4) + """bin A B C D
observation 400 150 1200 450
---
bin A A B B C C D D
process sig bkg sig bkg sig bkg sig bkg
process 0 1 0 1 0 1 0 1
rate 1 400 12 150 0.5 1200 3 450
---
lumi lnN 1.016 - 1.016 - 1.016 - 1.016 -
jes lnN 0.9/1.06 - 0.93/1.12 - - - 0.95/1.02 -
nc lnN - - - 1.3 - - - -
ra rateParam A bkg 1 [0.1,10]
rc rateParam C bkg 1 [0.1,10]
rd rateParam D bkg 1 [0.1,10]
rb rateParam B bkg (@0*@1/@2) ra,rd,rc
""",
}


def _compare_module():
    return benchmark_module("compare_combine")


def _run_dir(tmp_path, cards):
    run = tmp_path / "run"
    points = {}
    for point, text in cards.items():
        (run / "datacards" / point).mkdir(parents=True)
        (run / "datacards" / point / "datacard.txt").write_text(text)
        points[point] = {"card": f"{point}/datacard.txt", "sha256": hashlib.sha256(text.encode()).hexdigest()}
    (run / "datacards" / "index.json").write_text(json.dumps({"cards_dir": str(run / "datacards"), "points": points,
                                                              "cards": [p["card"] for p in points.values()]}))
    return run


@pytest.mark.parametrize("name", sorted(CARDS))
def test_quick_limits_agree_with_combine(tmp_path, name):
    """Within 0.5 % on every quantile Combine does not cap; where it caps, Combine gives the cap."""
    card = tmp_path / "datacard.txt"
    card.write_text(CARDS[name])
    quick = card_limits(parse_text(CARDS[name], str(card)), observed=False)
    comb = _compare_module().run_combine(str(card), str(tmp_path / "combine"), 5 * quick["exp0"])
    caps = combine_band_caps(quick["exp0"])
    for k in KEYS:
        if k in quick["capped_by_combine"]:
            assert quick[k] > caps[k] and comb[k] == pytest.approx(caps[k], rel=5e-3), k
        else:
            assert comb[k] == pytest.approx(quick[k], rel=5e-3), (k, comb.get("failed_fits"))
    if name == "gmn":  # the case the test is there for: Combine's cap binds on this card
        assert quick["capped_by_combine"]


def test_script_then_from_combine(tmp_path):
    """combine_limits.sh with its defaults on a card whose limit is ~1e-4 (Combine's default rAbsAcc
    0.0005 gives an empty/partial tree there): all points succeed and --from-combine reads them; with
    Combine's defaults forced, the script fails naming the card and --from-combine leaves limits.json."""
    tiny = CARDS["asym"].replace("rate 10 50", "rate 100000 50")
    run = _run_dir(tmp_path, {"svj_tiny": tiny, "svj_asym": CARDS["asym"]})
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "limits", str(run), "--no-plots"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    quick = json.loads((run / "limits.json").read_text())
    assert quick["svj_tiny"]["exp0"] < 1e-3
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT), str(run)], capture_output=True, text=True, env=env, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "limits", str(run), "--from-combine", "--no-plots"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    comb = json.loads((run / "limits.json").read_text())
    for point in ("svj_tiny", "svj_asym"):
        for k in KEYS:
            if k not in quick[point]["capped_by_combine"]:
                assert comb[point][k] == pytest.approx(quick[point][k], rel=5e-3), (point, k)
    # Combine's own defaults: the tiny card's tree is empty or partial -> loud failure, nothing overwritten
    before = (run / "limits.json").read_text()
    r = subprocess.run(["bash", str(SCRIPT), str(run), "--rAbsAcc", "0.0005", "--rRelAcc", "0.005", "--rMax", "20"],
                       capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 4 and "svj_tiny/datacard.txt" in r.stderr, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "limits", str(run), "--from-combine", "--no-plots"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode != 0 and "svj_tiny" in r.stderr
    assert (run / "limits.json").read_text() == before
