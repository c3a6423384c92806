"""Pseudo-data and the road to unblinding (datacards/pseudodata.py, issue 31 item 5).

References are independent of the code under test: the injected signal strength, the hand
computed ABCD prediction of the card's own observation, the uniform distribution of p-values of a
closing (exactly factorised) model, and the expected counts summed by hand from the histogram.
"""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from coffea.util import save

from svjscout.core.exceptions import ConfigError, DatacardError
from svjscout.datacards.likelihood import Fitter, build_model
from svjscout.datacards.limits import quick_limits
from svjscout.datacards.parser import parse_datacard
from svjscout.datacards.pseudodata import PSEUDO_TAG, draw_pseudo_data, pseudo_name, vp_closure
from svjscout.datacards.regions import region_yields
from svjscout.datacards.toys import build_xy_mt, factorised, falling, realistic_toy, rising
from svjscout.datacards.writer import write_datacards
from svjscout.jobs.commands_datacards import datacards_cmd
from svjscout.jobs.config import JobConfig, load_job

SIG = "svj_mz2000_rinv0.3"
WP = (0.5, 0.5)


@pytest.fixture(scope="module")
def toy():
    return realistic_toy()


def _card(outdir, index):
    return parse_datacard(str(outdir / "datacards" / index["cards"][0]))


def _obs(card, plane="SP"):
    """Observation of the card as ``(4, n)`` (A, B, C, D)."""
    obs = dict(zip(card.bins, (float(o) for o in card.observation)))
    n = len(card.bins) // 4
    return np.array([[obs[f"{plane}_{r}_{i}"] for i in range(n)] for r in "ABCD"])


def test_draw_is_poisson_of_the_mc_sum_and_replaces_data(toy):
    h, ds = toy
    inputs, meta, rec = draw_pseudo_data(h, ds, seed=11)
    name = pseudo_name(11)
    assert rec["name"] == name and rec["replaced_data"] == ["data"]
    assert "data" not in meta and meta[name]["kind"] == "data" and meta[name]["pseudo_data"] is True
    new = inputs.xy_mt
    # the other datasets are untouched
    for n in ds:
        np.testing.assert_array_equal(new[{"dataset": n}].values(flow=True), h[{"dataset": n}].values(flow=True))
    counts = new[{"dataset": name}].values(flow=True)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    bkg = sum(h[{"dataset": n}].values(flow=True) for n, m in ds.items() if m["kind"] == "background")
    # the total: Poisson with mean the summed background MC (5 standard deviations)
    assert abs(counts.sum() - bkg.sum()) < 5 * np.sqrt(bkg.sum())
    # per region and plane too (Poisson variance = mean)
    for plane in ("SP", "VP"):
        obs = region_yields(new, meta, WP, plane=plane, which="data").n
        exp = region_yields(h, ds, WP, plane=plane, which="background").n
        z = (obs - exp) / np.sqrt(np.maximum(exp, 1.0))
        assert np.all(np.abs(z) < 5), (plane, z)


def test_same_seed_same_cards_other_seed_other_cards(toy, tmp_path):
    h, ds = toy
    sha = []
    for k, seed in enumerate((5, 5, 6)):
        idx = write_datacards(h, ds, WP, tmp_path / str(k), pseudo_data=seed, signals=[SIG])
        sha.append(idx["points"]["svj_mz2000_rinv0.3"]["sha256"])
    assert sha[0] == sha[1] and sha[0] != sha[2]
    assert (tmp_path / "0/datacards/svj_mz2000_rinv0.3/datacard.txt").read_bytes() == \
        (tmp_path / "1/datacards/svj_mz2000_rinv0.3/datacard.txt").read_bytes()


def test_cards_stamped_and_b_of_sp_blinded_unless_unblind(toy, tmp_path):
    h, ds = toy
    idx = write_datacards(h, ds, WP, tmp_path / "blind", pseudo_data=3, signals=[SIG])
    text = (tmp_path / "blind/datacards/svj_mz2000_rinv0.3/datacard.txt").read_text()
    assert text.startswith(f"# {PSEUDO_TAG}: ") and "NOT data" in text.splitlines()[0]
    on_disk = json.loads((tmp_path / "blind/datacards/index.json").read_text())
    assert on_disk["pseudo_data"]["seed"] == 3 and on_disk["asimov"] is False and on_disk["unblinded"] is False
    assert PSEUDO_TAG in on_disk["observation"] and "blinded" in on_disk["pseudo_data"]["b_observation"]
    obs = _obs(_card(tmp_path / "blind", idx))
    # A, C, D: the pseudo-data; B: A*D/C of them, not the drawn B counts
    inputs, meta, _ = draw_pseudo_data(h, ds, seed=3)
    drawn = region_yields(inputs.xy_mt, meta, WP, plane="SP", which="data").merged(idx["mt_groups"]).n
    np.testing.assert_array_equal(obs[[0, 2, 3]], drawn[[0, 2, 3]])
    np.testing.assert_allclose(obs[1], drawn[0] * drawn[3] / drawn[2], rtol=1e-5)
    assert np.any(np.abs(obs[1] - drawn[1]) > 0.5)  # the drawn B differs: it is not in the card
    # with unblind the drawn B is the observation
    idx_u = write_datacards(h, ds, WP, tmp_path / "unblind", pseudo_data=3, unblind=True, signals=[SIG])
    obs_u = _obs(_card(tmp_path / "unblind", idx_u))
    np.testing.assert_array_equal(obs_u, drawn)
    assert idx_u["pseudo_data"]["b_observation"].startswith("pseudo-data")


def test_pseudo_data_needs_its_seed_and_is_not_real_data(toy, tmp_path):
    h, ds = toy
    with pytest.raises(DatacardError, match="pseudo_inject is set without pseudo_data"):
        write_datacards(h, ds, WP, tmp_path, pseudo_inject=1.0, signals=[SIG])
    with pytest.raises(DatacardError, match="exclude each other"):
        write_datacards(h, ds, WP, tmp_path, pseudo_data=1, asimov=False, unblind=True, signals=[SIG])
    with pytest.raises(DatacardError, match="'nope' is not a signal dataset"):
        write_datacards(h, ds, WP, tmp_path, pseudo_data=1, pseudo_inject=1.0, pseudo_signal="nope", signals=[SIG])


def test_injected_signal_strength_recovered_on_average(toy, tmp_path):
    """50 signal-injected pseudo-data sets through the cards (B unblinded) and the package's own
    fit: the mean fitted r is within 3 standard errors of the injected one; with r = 0 injected it
    is compatible with 0."""
    h, ds = toy
    for r_inj in (1.0, 0.0):
        rs = []
        for seed in range(50):
            out = tmp_path / f"r{r_inj:g}_{seed}"
            idx = write_datacards(h, ds, WP, out, pseudo_data=seed, pseudo_inject=r_inj, pseudo_signal=SIG,
                                  unblind=True, signals=[SIG], validate=False)
            assert idx["pseudo_data"]["inject"] == r_inj
            _, x = Fitter(build_model(_card(out, idx)), r_min=-5.0, r_max=10.0).fit()
            rs.append(x[0])
        rs = np.array(rs)
        se = rs.std(ddof=1) / np.sqrt(len(rs))
        assert 0 < se < 0.1, se
        assert abs(rs.mean() - r_inj) < 3 * se, (r_inj, rs.mean(), se)


def _closing_model():
    """One background, exactly factorised in (x, y) in every M_T bin: the ABCD relation holds exactly."""
    edges = (650.0, 1000.0, 1500.0, 2500.0)
    bkg = factorised(2e5, falling(3.0), falling(2.5), np.array([4.0, 2.0, 1.0]))
    sig = factorised(1e3, rising(3.0), rising(3.0), np.array([1.0, 2.0, 1.0]))
    contents = {"qcd": {"SP": bkg, "VP": 0.2 * bkg}, SIG: {"SP": sig, "VP": 0.05 * sig}}
    ds = {"qcd": {"kind": "background"}, SIG: {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    return build_xy_mt(contents, edges, {"qcd": 0.5, SIG: 0.01}), ds


def test_vp_closure_on_closing_pseudo_data_gives_uniform_p_values(tmp_path):
    h, ds = _closing_model()
    groups = [[0], [1], [2]]
    p = []
    for seed in range(120):
        inputs, meta, _ = draw_pseudo_data(h, ds, seed=seed)
        c = vp_closure(inputs.xy_mt, meta, WP, groups)
        assert c["plane"] == "VP" and c["ndf"] == 3 and len(c["bins"]) == 3
        p.append(c["pvalue"])
    p = np.array(p)
    # uniform: mean 1/2 with standard error 1/sqrt(12 N); a quarter of them below 1/4
    assert abs(p.mean() - 0.5) < 3 / np.sqrt(12 * len(p)), p.mean()
    assert abs(np.mean(p < 0.25) - 0.25) < 3 * np.sqrt(0.25 * 0.75 / len(p))
    # a non-closing VP (B scaled by 1.3) is caught
    view = h.view(flow=False)
    ix = list(h.axes["plane"]).index("VP")
    view["value"][0, ix, 20:, 20:] *= 1.3
    inputs, meta, _ = draw_pseudo_data(h, ds, seed=0)
    assert vp_closure(inputs.xy_mt, meta, WP, groups)["pvalue"] < 1e-3


def test_vp_closure_reported_in_the_index(tmp_path):
    h, ds = _closing_model()
    idx = write_datacards(h, ds, WP, tmp_path, pseudo_data=2, signals=[SIG], min_neff=0, max_rel_err=10)
    c = idx["pseudo_data"]["vp_closure"]
    inputs, meta, _ = draw_pseudo_data(h, ds, seed=2)
    y = region_yields(inputs.xy_mt, meta, WP, plane="VP", which="data").merged(idx["mt_groups"])
    for i, b in enumerate(c["bins"]):
        assert b["B"] == y.n[1, i]
        assert b["predicted_B"] == pytest.approx(y.n[0, i] * y.n[3, i] / y.n[2, i])
        rel = np.sqrt(1 / y.n[0, i] + 1 / y.n[2, i] + 1 / y.n[3, i])
        assert b["predicted_B_err"] == pytest.approx(b["predicted_B"] * rel)
        assert b["mc_delta"] == idx["closure"]["bins"][i]["VP"]["delta"]  # the MC's own VP closure beside it


def test_cli_pseudo_data(tmp_path):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=2)
    p = tmp_path / "histograms.coffea"
    save({"xy_mt": h, "mt_abcd": None, "cutflow": {}, "datasets": ds}, str(p))
    res = CliRunner().invoke(datacards_cmd, [str(p), "--out", str(tmp_path / "o"), "--wp", "0.5,0.5",
                                             "--pseudo-data", "9", "--inject", "2"])
    assert res.exit_code == 0, res.output
    assert "VP closure on the pseudo-data" in res.output
    idx = json.loads((tmp_path / "o/datacards/index.json").read_text())
    assert idx["pseudo_data"]["seed"] == 9 and idx["pseudo_data"]["inject"] == 2.0
    assert idx["pseudo_data"]["signal"] == "svj_mz1500_rinv0.3"
    card = (tmp_path / "o/datacards" / idx["cards"][0]).read_text()
    assert card.startswith(f"# {PSEUDO_TAG}: ") and "2 x svj_mz1500_rinv0.3 injected" in card
    # the job key is the same setting
    res2 = CliRunner().invoke(datacards_cmd, [str(p), "--out", str(tmp_path / "o2"), "--wp", "0.5,0.5",
                                              "--set", "datacards.pseudo_data=9", "--set", "datacards.pseudo_inject=2"])
    assert res2.exit_code == 0, res2.output
    assert (tmp_path / "o2/datacards" / idx["cards"][0]).read_bytes() == card.encode()
    # limits of pseudo-data cards say so in every entry (their "obs" is not an observed limit on data)
    lim = quick_limits(str(tmp_path / "o"))
    assert lim and all(v["observation"].startswith(PSEUDO_TAG) for v in lim.values())


def test_data_job_template_and_lumi_mask_refusal(tmp_path):
    raw = yaml.safe_load(open("jobs/data.yaml"))
    cfg = JobConfig.model_validate(raw)  # valid against the job schema
    assert cfg.datacards.unblind is False and cfg.datacards.asimov is True
    data = sorted(n for n, d in cfg.datasets.items() if d.kind == "data")
    assert len(data) >= 2
    # every data dataset names its era and golden JSON (processors/dataquality.py applies them)
    assert all(cfg.datasets[n].era and cfg.datasets[n].lumi_mask for n in data)
    load_job("jobs/data.yaml")
    with pytest.raises(ConfigError, match=rf"datasets\.{data[0]}: data without a lumi mask"):
        load_job("jobs/data.yaml", {f"datasets.{data[0]}.lumi_mask": None})
    ok = load_job("jobs/data.yaml", {f"datasets.{n}.allow_no_lumi_mask": True for n in data})
    assert all(ok.datasets[n].allow_no_lumi_mask for n in data)
    # a job without data needs nothing; one data dataset without the key is refused, naming it
    job = tmp_path / "job.yaml"
    job.write_text("datasets: {mc: {kind: background, files: [a.root]}, d: {kind: data, files: [x.root]}}\n")
    with pytest.raises(ConfigError, match=r"datasets\.d: data without a lumi mask"):
        load_job(job)
    assert load_job(job, {"datasets.d.allow_no_lumi_mask": True}).datasets["d"].kind == "data"
