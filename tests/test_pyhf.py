"""The pyhf (HistFactory JSON) workspace beside the Combine card (issue 32, datacards/pyhf_export.py)."""

import json
import math
import os
import shutil
import subprocess

import pytest
from scipy import optimize, stats

from svjscout.core.exceptions import DatacardError
from svjscout.datacards import write_datacards
from svjscout.datacards.integrity import check_cards
from svjscout.datacards.parser import parse_datacard, parse_text
from svjscout.datacards.pyhf_export import META_NAME, WORKSPACE_NAME, expected_limits, export_card
from svjscout.datacards.toys import realistic_toy

pyhf = pytest.importorskip("pyhf")

WP = (0.775, 0.875)
QUANTILES = {"exp-2": 0.025, "exp-1": 0.16, "exp0": 0.5, "exp+1": 0.84, "exp+2": 0.975}

ONE_BIN = """imax 1
jmax 1
kmax {kmax}
----------
bin          b1
observation  {b}
----------
bin      b1   b1
process  sig  bkg
process  0    1
rate     {s}  {b}
----------
{syst}"""


def _one_bin(s=20.0, b=100.0, syst=""):
    kmax = len([x for x in syst.splitlines() if x.strip()])
    return parse_text(ONE_BIN.format(s=s, b=b, kmax=kmax, syst=syst))


def closed_form_limits(s: float, b: float, alpha: float = 0.05) -> dict[str, float]:
    """Asymptotic expected CLs limits (q~) of a one-bin counting experiment with known b, from the
    Asimov q_A(r) = 2 [r s - b ln(1 + r s / b)] and sqrt(q_A) = Phi^-1(1 - alpha Phi(N)) + N."""
    out = {}
    for k, p in QUANTILES.items():
        n = stats.norm.ppf(p)
        target = stats.norm.isf(alpha * stats.norm.cdf(n)) + n

        def f(r, target=target):
            return math.sqrt(2.0 * (r * s - b * math.log1p(r * s / b))) - target
        out[k] = optimize.brentq(f, 1e-6, 1e3, xtol=1e-10)
    return out


@pytest.fixture(scope="module")
def toy_cards(tmp_path_factory):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    out = tmp_path_factory.mktemp("pyhf")
    index = write_datacards(h, ds, WP, out, formats=["combine", "pyhf"], allow_unbacked=True)
    return out / "datacards", index


def test_one_bin_workspace_validates_and_carries_the_card():
    card = _one_bin(syst="lumi lnN 1.1 -\nbkgnorm lnN - 0.95/1.08\n")
    spec, meta = export_card(card, signal_scale=1.0)
    ws = pyhf.Workspace(spec)
    model = ws.model()
    assert model.config.poi_name == "r"
    samples = {s["name"]: s for s in spec["channels"][0]["samples"]}
    assert samples["sig"]["data"] == [20.0] and samples["bkg"]["data"] == [100.0]
    mods = {m["name"]: m for m in samples["sig"]["modifiers"] + samples["bkg"]["modifiers"]}
    assert mods["lumi"]["data"] == pytest.approx({"hi": 1.1, "lo": 1 / 1.1})
    assert mods["bkgnorm"]["data"] == {"hi": 1.08, "lo": 0.95}
    assert meta["asymmetric_lnN"] == ["bkgnorm"]
    assert ws.data(model, include_auxdata=False) == [100.0]


def test_one_bin_limit_equals_closed_form():
    s, b = 20.0, 100.0
    spec, meta = export_card(_one_bin(s, b), signal_scale=1.0)
    got = expected_limits(spec, meta)
    want = closed_form_limits(s, b)
    for k in QUANTILES:
        assert got[k] == pytest.approx(want[k], rel=0.01), k


def test_signal_scale_converts_back():
    spec, meta = export_card(_one_bin(0.2, 100.0), signal_scale="auto")
    assert meta["signal_scale"] == 100.0  # quick median ~ 98: r_card = r_pyhf * 100
    assert spec["channels"][0]["samples"][0]["data"] == [pytest.approx(20.0)]


def test_writer_writes_workspaces_listed_in_index(toy_cards):
    cdir, index = toy_cards
    with open(cdir / "index.json") as f:
        on_disk = json.load(f)
    assert on_disk["formats"] == ["combine", "pyhf"]
    assert on_disk["workspaces"] and len(on_disk["workspaces"]) == len(on_disk["cards"])
    for point, entry in on_disk["points"].items():
        ws_path = cdir / entry["workspace"]["path"]
        assert ws_path.name == WORKSPACE_NAME and (ws_path.parent / META_NAME).is_file()
        with open(ws_path) as f:
            spec = json.load(f)
        ws = pyhf.Workspace(spec)  # schema
        card = parse_datacard(cdir / entry["card"])
        scale = entry["workspace"]["signal_scale"]
        chans = {c["name"]: {s["name"]: s for s in c["samples"]} for c in spec["channels"]}
        assert list(chans) == card.bins
        for b, p, r in zip(card.col_bins, card.col_procs, card.col_rates):
            want = float(r) * (scale if p == "sig" else 1.0)
            assert chans[b][p]["data"][0] == pytest.approx(want, rel=1e-12), (point, b, p)
        assert ws.data(ws.model(), include_auxdata=False) == pytest.approx([card.obs()[b] for b in card.bins])
        names = {m["name"] for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]}
        assert {s.name for s in card.systematics} <= names
        for s in card.systematics:
            if s.type != "lnN":
                continue
            for c, v in enumerate(s.values):
                if v == "-":
                    continue
                m = next(m for m in chans[card.col_bins[c]][card.col_procs[c]]["modifiers"] if m["name"] == s.name)
                lo, hi = (float(x) for x in v.split("/")) if "/" in v else (1 / float(v), float(v))
                assert m["data"] == pytest.approx({"hi": hi, "lo": lo})


def test_edited_workspace_is_refused_like_an_edited_card(toy_cards, tmp_path):
    cdir, _ = toy_cards
    copy = tmp_path / "datacards"
    shutil.copytree(cdir, copy)
    assert set(check_cards(copy).values()) == {"ok"}
    index = json.loads((copy / "index.json").read_text())
    point, entry = next(iter(index["points"].items()))
    ws = copy / entry["workspace"]["path"]
    spec = json.loads(ws.read_text())
    spec["channels"][0]["samples"][0]["data"][0] *= 2  # still a valid workspace, no longer the card's model
    ws.write_text(json.dumps(spec))
    with pytest.raises(DatacardError, match=str(ws)):
        check_cards(copy)
    assert check_cards(copy, accept_edited=True)[point] == "edited"
    ws.unlink()
    with pytest.raises(DatacardError, match="missing"):
        check_cards(copy)


def test_default_writes_no_workspace(tmp_path):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    index = write_datacards(h, ds, WP, tmp_path, allow_unbacked=True)
    assert "workspaces" not in index and "formats" not in index
    assert not list((tmp_path / "datacards").rglob(WORKSPACE_NAME))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("combine") is None or shutil.which("text2workspace.py") is None,
                    reason="CMS Combine not on PATH")
def test_one_bin_against_combine(tmp_path):
    text = ONE_BIN.format(s=20.0, b=100.0, kmax=2, syst="lumi lnN 1.1 -\nbkgnorm lnN - 1.05\n")
    (tmp_path / "datacard.txt").write_text(text)
    cmd = ("text2workspace.py datacard.txt -o ws.root > t2w.log 2>&1 && combine -M AsymptoticLimits ws.root "
           "-n .t -m 120 --run expected --rAbsAcc 0 --rRelAcc 1e-4 > c.log 2>&1")
    subprocess.run(["bash", "-c", cmd], cwd=tmp_path, check=True)
    from svjscout.datacards.combine import read_limit_file
    comb = read_limit_file(os.path.join(tmp_path, "higgsCombine.t.AsymptoticLimits.mH120.root"))
    spec, meta = export_card(parse_text(text), signal_scale=1.0)
    got = expected_limits(spec, meta)
    for k in QUANTILES:
        assert got[k] == pytest.approx(comb[k], rel=0.01), k


@pytest.mark.slow
def test_cli_format_alias(tmp_path):
    import sys

    from coffea.util import save
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    save({"hists": {"xy_mt": h}, "datasets": ds}, str(tmp_path / "histograms.coffea"))
    env = {**os.environ, "SVJSCOUT_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "datacards", "histograms.coffea", "--wp",
                        "0.775,0.875", "--out", "out", "--format", "combine,pyhf", "--allow-unbacked"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "out" / "datacards" / "index.json").read_text())
    assert index["formats"] == ["combine", "pyhf"]
    for rel in index["workspaces"]:
        pyhf.Workspace(json.loads((tmp_path / "out" / "datacards" / rel).read_text()))
