"""Signal jets labelled by the dark-quark match (issue 29): the skim's ``dark_dr_j0/j1`` and LundNet's
``signal_jet_label``, against a direct loop and an independent clustering."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest

from svjscout.models.lundnet_training.data import load_skim, truth_factors, truth_summary
from svjscout.processors.skim import dark_quark_dr


def _loop_dr(quarks, eta, phi):
    out = []
    for qs, e, p in zip(quarks, eta, phi):
        best = math.nan
        for qe, qp in qs:
            d = (qp - p + math.pi) % (2 * math.pi) - math.pi
            r = math.hypot(qe - e, d)
            best = r if math.isnan(best) else min(best, r)
        out.append(best)
    return np.array(out)


def test_dark_quark_dr_equals_a_loop():
    rng = np.random.default_rng(3)
    n = 300
    quarks = [[(rng.uniform(-3, 3), rng.uniform(-math.pi, math.pi)) for _ in range(rng.integers(0, 4))]
              for _ in range(n)]
    events = ak.zip({"GenDarkQuark": ak.zip({"eta": [[q[0] for q in qs] for qs in quarks],
                                             "phi": [[q[1] for q in qs] for qs in quarks]})}, depth_limit=1)
    idx = np.sort(rng.choice(n, 200, replace=False))
    eta, phi = rng.uniform(-2.4, 2.4, 200), rng.uniform(-math.pi, math.pi, 200)
    got = dark_quark_dr(events, idx, eta, phi)
    want = _loop_dr([quarks[i] for i in idx], eta, phi)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(want).any()  # events without quarks: NaN
    ok = ~np.isnan(want)
    assert np.allclose(got[ok], want[ok], atol=1e-6)
    # a file without the collection: NaN everywhere
    assert np.isnan(dark_quark_dr(ak.zip({"x": np.zeros(n)}), idx, eta, phi)).all()


def _skim(path, n, seed, signal, dataset, truth=True):
    rng = np.random.default_rng(seed)
    cols = {}
    for j in ("j0", "j1"):
        cols[f"lund_{j}"] = rng.normal(size=(n, 8, 5)).astype(np.float32)
        cols[f"lund_{j}_mask"] = np.ones((n, 8), bool)
    cols.update(weight=rng.uniform(0.5, 1.5, n), dataset=np.array([dataset] * n),
                label=np.full(n, int(signal), np.int8), event=np.arange(1, n + 1, dtype=np.uint64))
    if truth:
        for j in ("j0", "j1"):
            dr = rng.uniform(0, 2.5, n) if signal else np.full(n, np.nan)
            if signal:
                dr[rng.random(n) < 0.1] = np.nan  # events without a dark-quark record
            cols[f"dark_dr_{j}"] = dr.astype(np.float32)
    ak.to_parquet(ak.zip(cols, depth_limit=1), str(path))
    return path


def test_load_skim_weights_unmatched_signal_jets_zero(tmp_path):
    sig = _skim(tmp_path / "sig.parquet", 400, 1, True, "svj_mz2000_rinv0.3")
    bkg = _skim(tmp_path / "bkg.parquet", 300, 2, False, "qcd")
    truth = load_skim([sig, bkg], max_len=8, signal_jet_label="truth", dark_match_dr=0.8)
    event = load_skim([sig, bkg], max_len=8, signal_jet_label="event")
    raw = {p: ak.from_parquet(str(p)) for p in (sig, bkg)}
    # independent expectation per jet, from the files: an unmatched signal jet (finite dR > 0.8) weighs 0
    expected_zero = 0
    for arr in raw.values():
        for j in ("j0", "j1"):
            dr = ak.to_numpy(arr[f"dark_dr_{j}"]).astype(np.float64)
            expected_zero += int(np.sum((ak.to_numpy(arr["label"]) == 1) & np.isfinite(dr) & (dr > 0.8)))
    assert expected_zero > 100
    assert int(np.sum(truth.weight == 0)) == expected_zero
    assert np.all(event.weight > 0)
    # same jets in the same order: weights equal wherever the truth keeps the jet
    keep = truth.weight > 0
    assert np.array_equal(truth.label, event.label)
    assert np.allclose(truth.weight[keep], event.weight[keep])
    assert np.all(truth.weight[truth.label == 0] == event.weight[event.label == 0])
    # a skim without the columns (older skims): every jet labelled by its event
    old = _skim(tmp_path / "old.parquet", 100, 3, True, "svj_mz2000_rinv0.3", truth=False)
    assert np.all(load_skim([old], max_len=8).weight > 0)


def test_truth_factors_and_summary():
    label = np.array([1, 1, 1, 0])
    dr0, dr1 = np.array([0.2, 1.2, np.nan, 5.0]), np.array([0.9, 0.8, 0.1, np.nan])
    f0, f1 = truth_factors(label, dr0, dr1, "truth", 0.8)
    assert f0.tolist() == [1, 0, 1, 1] and f1.tolist() == [0, 1, 1, 1]  # 0.8 itself matches
    assert truth_summary(label, dr0, dr1, 0.8) == {"matched": 3, "unmatched": 2, "no_truth": 1}
    from svjscout.core.exceptions import ConfigError
    with pytest.raises(ConfigError, match="signal_jet_label"):
        truth_factors(label, dr0, dr1, "jets", 0.8)


def test_lundnet_training_uses_the_match(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841 -- the trainer needs it
    from svjscout.models.lundnet import LundNetConfig
    from svjscout.models.lundnet_training.config import TrainConfig
    from svjscout.models.lundnet_training.stream import _JetStream
    from svjscout.models.train_lundnet import train_lundnet

    sig = _skim(tmp_path / "sig.parquet", 300, 4, True, "svj_mz2000_rinv0.3")
    bkg = _skim(tmp_path / "bkg.parquet", 300, 5, False, "qcd")
    tiny = LundNetConfig(block_widths=(8, 16), fusion=16, head=8, max_len=8)
    cfg = TrainConfig(model=tiny, epochs=1, patience=1, seed=2, batch_size=64, threads=1, progress=False)
    stream = _JetStream([sig, bkg], cfg, list(range(5)), "cpu")
    arr = ak.from_parquet(str(sig))
    want = truth_summary(ak.to_numpy(arr["label"]), ak.to_numpy(arr["dark_dr_j0"]), ak.to_numpy(arr["dark_dr_j1"]),
                         0.8)
    assert stream.truth == want
    jets = stream.jets(range(len(stream.source.row_groups)), 0)
    assert np.any(jets["w_train"][jets["label"] == 1] == 0) and np.all(jets["w_train"][jets["label"] == 0] > 0)
    res = train_lundnet([sig, bkg], tmp_path / "out", cfg)
    from svjscout.models.export import read_metadata
    training = read_metadata(res.onnx_path)["training"]
    assert training["signal_jet_label"] == "truth" and training["signal_jets_by_match"] == want
    assert '"signal_jets_by_match"' in res.report_json.read_text()


def test_processor_skim_writes_the_match(small_job, tmp_path):
    """The skim's dark_dr of a signal file with a dark-quark record equals a loop over an independent
    anti-kT clustering (fastjet's own Python interface) of the same events."""
    import sys
    from pathlib import Path

    import fastjet
    import uproot

    from svjscout.jobs.runner import run_processor
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import embedded_file

    src = embedded_file("svj_mz2000_rinv0.3.root")
    rng = np.random.default_rng(9)

    with uproot.open(src) as f:
        arrays = f["Events"].arrays(library="ak")
        runs = {k: v for k, v in f["Runs"].arrays(library="np").items() if v.dtype != object}  # PSSumw: not needed
        meta = str(f["svjscout_meta"])
    n = len(arrays)
    # the candidates after CHS (the file keeps no vertexIndex, so the processor and the loop below see the same)
    chs = arrays["ScoutingPFCandidate_vertexIndex"] <= 0
    pf = ak.zip({k: arrays[f"ScoutingPFCandidate_{k}"][chs] for k in ("pt", "eta", "phi", "mass", "pdgId", "charge")})
    # one quark on the event's hardest candidate, one random: both matched and unmatched jets occur
    eta = np.stack([np.asarray(ak.fill_none(ak.firsts(pf.eta), 0.0), np.float32), rng.uniform(-2, 2, n)], axis=1)
    phi = np.stack([np.asarray(ak.fill_none(ak.firsts(pf.phi), 0.0), np.float32), rng.uniform(-3, 3, n)], axis=1)
    cols = {k: ak.to_numpy(arrays[k]) for k in ("run", "luminosityBlock", "event", "parent", "genWeight",
                                                 "Pileup_nTrueInt", "Pileup_nPU", "ScoutingMET_pt", "ScoutingMET_phi")}
    cols["ScoutingPFCandidate"] = pf
    cols["GenDarkQuark"] = ak.zip({"pt": ak.from_regular(np.full((n, 2), 500, np.float32)),
                                   "eta": ak.from_regular(eta.astype(np.float32)),
                                   "phi": ak.from_regular(phi.astype(np.float32))})
    path = str(tmp_path / "svj_truth.root")
    with uproot.recreate(path) as g:
        g.mktree("Events", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                            for k, v in cols.items()}).extend(cols)
        g.mktree("Runs", {k: v.dtype for k, v in runs.items()}).extend(runs)
        g["svjscout_meta"] = meta
    cfg = small_job.model_copy(update={"datasets": {"svj_mz2000_rinv0.3": small_job.datasets["svj_mz2000_rinv0.3"]
                                                   .model_copy(update={"files": [path]})}})
    run_processor(cfg, skim_dir=str(tmp_path / "skim"))
    table = ak.from_parquet(str(tmp_path / "skim" / "svj_mz2000_rinv0.3"))
    assert len(table) > 20
    with uproot.open(path) as f:
        ev = f["Events"].arrays(["event", *(f"ScoutingPFCandidate_{k}" for k in ("pt", "eta", "phi", "mass")),
                                 "GenDarkQuark_eta", "GenDarkQuark_phi"])
    row = {int(e): i for i, e in enumerate(ak.to_numpy(ev["event"]))}
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, 0.8)
    for k in range(len(table)):
        i = row[int(table["event"][k])]
        parts = []
        kin = (ak.to_list(ev[f"ScoutingPFCandidate_{f}"][i]) for f in ("pt", "eta", "phi", "mass"))
        for pt, eta, phi, m in zip(*kin):
            if pt > 0:
                px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
                parts.append(fastjet.PseudoJet(px, py, pz, math.sqrt(px * px + py * py + pz * pz + m * m)))
        jets = [j for j in fastjet.sorted_by_pt(fastjet.ClusterSequence(parts, jetdef).inclusive_jets(150.0))
                if abs(j.eta()) <= 2.4]
        quarks = list(zip(ak.to_list(ev["GenDarkQuark_eta"][i]), ak.to_list(ev["GenDarkQuark_phi"][i])))
        for jn, jet in zip(("j0", "j1"), jets[:2]):
            want = _loop_dr([quarks], np.array([jet.eta()]), np.array([jet.phi_std()]))[0]
            assert float(table[f"dark_dr_{jn}"][k]) == pytest.approx(want, abs=2e-3), (k, jn)
