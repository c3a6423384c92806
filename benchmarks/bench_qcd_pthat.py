"""Does starting QCD at pT-hat 170 GeV lose anything after the preselection? (issue 30 item 4)

A generator-level study: Pythia 8 only (CP5, the settings of ``samples/processes.py``, shower
variations off), no pileup, no detector. Two samples of ``HardQCD:all``: the window below the
production's threshold (default pT-hat 100-170 GeV) and the production's own range (pT-hat >= 170
GeV), each pT-hat-biased with power 2 (``genWeight`` undoes it), so that both halves of each range
get events. Visible final-state particles (neutrinos removed, |eta| < 5) are clustered into
generator AK4 and AK8 jets (anti-kT, :func:`svjscout.processors.jets.cluster`); the generator MET
is the neutrinos' summed pT. Cumulative generator-level conditions, the analysis preselection's
(``svjscout.core.cuts.Cuts``) with the MET replaced by bounds a detector cannot exceed:

* ``H_T``: generator H_T (AK4 pT > 30 GeV, |eta| < 2.5) > 410 GeV (the trigger);
* ``2 AK8``: >= 2 AK8 jets with pT >= 150 GeV and |eta| <= 2.4 (J0, J1 the two leading),
  |deta(J0, J1)| < 2.2;
* ``M_T, MET <= pT(J0)``: M_T > 650 GeV and R_T > 0.24 reachable with a MET of at most B = pT(J0)
  (a whole leading jet lost) in the most favourable direction: M_T^2 <= m_JJ^2 + 2 B (E_T,JJ +
  pT_JJ); R_T > 0.24 then needs B > 0.24 M_T(B). A superset of what any detector can pass;
* ``M_T, MET <= pT(J0)/2 + gen MET``: the same with B = half the leading jet plus the true MET
  (the fast detector's response tail keeps 0-50 % of a jet's calorimeter part, itself ~2/3 of
  the jet: a jet loses at most ~2/3, typically far less);
* ``M_T gen MET``: the preselection with the true MET (neutrinos): M_T > 650, R_T > 0.24,
  dphi_min < 0.8.

Per pT-hat bin: the cross section that passes each condition (pb, and events at 138 fb^-1), its
statistical error (sqrt of the summed squared weights), and the share of each condition's total
(window + production) that lies below the threshold. Both samples are normalised with Pythia's
sigmaGen of their own range.

A second table folds a toy detector (:func:`toy_pass`: J0, J1 smeared with the fast detector's
Gaussian JER times 1, 1.5 and 2, the MET moved by what they lose plus 28 GeV per component, the
full preselection) and gives the window's share of the preselected yield. Results and their
reading: docs/samples.md, "QCD below pT-hat 170 GeV".

Usage: python benchmarks/bench_qcd_pthat.py [--events 8000] [--toys 200] [--lo 100]
       [--threshold 170] [--seed 7] [--batch 500] [--process qcd|wjets|zjets]

``--process zjets --lo 150 --threshold 200`` asks the same of Z(-> nu nu) + jet's pT-hat 200 GeV
(there the true MET is the boson's, so the "true MET" column is the preselection itself).
"""

from __future__ import annotations

import argparse
import time

import awkward as ak
import numpy as np

from svjscout.core.cuts import Cuts
from svjscout.processors.features import delta_phi, transverse_mass
from svjscout.processors.jets import cluster, ht
from svjscout.samples.processes import process_settings

PB_PER_MB = 1e9
NEUTRINOS = (12, 14, 16)
CONDITIONS = ("generated", "H_T", "2 AK8", "M_T, MET <= pT(J0)", "M_T, MET <= pT(J0)/2 + gen MET", "M_T gen MET")


def _pythia(lo: float, hi: float | None, seed: int, power: float, process: str = "qcd", extra: tuple = ()):
    import pythia8mc  # generate extra: the benchmark needs Pythia

    p = pythia8mc.Pythia("", False)
    lines = process_settings(process, pthat_min=lo, pthat_max=hi, bias_power=power)
    for line in [*lines, "UncertaintyBands:doVariations = off", *extra, f"Random:seed = {seed}"]:
        if not p.readString(line):
            raise RuntimeError(f"Pythia rejected {line!r}")
    if not p.init():
        raise RuntimeError("Pythia initialisation failed")
    return p


def _lead(jets: ak.Array, k: int) -> dict[str, np.ndarray]:
    """Kinematics of the k-th jet per event (zeros where there is none)."""
    padded = ak.pad_none(jets, k + 1, axis=1)[:, k]
    return {f: ak.to_numpy(ak.fill_none(padded[f], 0.0)).astype(np.float64) for f in ("pt", "eta", "phi", "mass")}


def conditions(batch, cuts: Cuts = Cuts()) -> tuple[np.ndarray, dict, dict[str, np.ndarray]]:
    """pT-hat, the kinematics the toy detector needs and the boolean of each condition
    (:data:`CONDITIONS`) per event of a Pythia batch."""
    prt = batch.prt[batch.prt.status > 0]
    counts = ak.to_numpy(ak.num(prt.id))
    px, py, pz, e = (ak.to_numpy(ak.flatten(getattr(prt.p, k))).astype(np.float64) for k in ("px", "py", "pz", "e"))
    pid = np.abs(ak.to_numpy(ak.flatten(prt.id)))
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    nu = np.isin(pid, NEUTRINOS)
    vis = ~nu & (np.abs(eta) < 5.0)
    event = np.repeat(np.arange(len(counts)), counts)
    n_ev = len(counts)
    pf = ak.unflatten(ak.zip({"pt": pt[vis], "eta": eta[vis], "phi": phi[vis], "mass": mass[vis]}),
                      np.bincount(event[vis], minlength=n_ev))
    met_x = np.bincount(event[nu], weights=px[nu], minlength=n_ev)
    met_y = np.bincount(event[nu], weights=py[nu], minlength=n_ev)
    met, met_phi = np.hypot(met_x, met_y), np.arctan2(met_y, met_x)

    ak4 = cluster(pf, 0.4, ptmin=10.0)
    ak8 = cluster(pf, 0.8, ptmin=50.0)
    h_t = ht(ak4, cuts.ak4_pt_min, cuts.ak4_abs_eta_max)
    j0, j1 = _lead(ak8, 0), _lead(ak8, 1)
    two = ((j0["pt"] >= cuts.ak8_pt_min) & (j1["pt"] >= cuts.ak8_pt_min)
           & (abs(j0["eta"]) <= cuts.ak8_abs_eta_max) & (abs(j1["eta"]) <= cuts.ak8_abs_eta_max)
           & (abs(j0["eta"] - j1["eta"]) < cuts.deta_max))
    # generous: a MET of at most B anti-parallel to the dijet's pT
    zero = np.zeros_like(met)
    m_jj = transverse_mass(j0, j1, zero, zero)  # M_T without MET = m_JJ
    pxjj = j0["pt"] * np.cos(j0["phi"]) + j1["pt"] * np.cos(j1["phi"])
    pyjj = j0["pt"] * np.sin(j0["phi"]) + j1["pt"] * np.sin(j1["phi"])
    ptjj = np.hypot(pxjj, pyjj)
    et = np.sqrt(m_jj**2 + ptjj**2)

    def reachable(bound):
        mt_max = np.sqrt(m_jj**2 + 2.0 * bound * (et + ptjj))
        return (mt_max > cuts.mt_min) & (bound > cuts.rt_min * mt_max)

    mt = transverse_mass(j0, j1, met, met_phi)
    with np.errstate(divide="ignore", invalid="ignore"):
        rt = np.where(mt > 0, met / mt, 0.0)
    dphi = np.minimum(np.abs(delta_phi(j0["phi"], met_phi)), np.abs(delta_phi(j1["phi"], met_phi)))
    real = (mt > cuts.mt_min) & (rt > cuts.rt_min) & (dphi < cuts.dphi_min_max)
    pthat = np.sqrt(ak.to_numpy(batch.info.pT2Hat).astype(np.float64))
    c_ht = h_t > cuts.ht_min
    kin = {"j0": j0, "j1": j1, "met_x": met_x, "met_y": met_y, "ht": h_t}
    base = c_ht & two
    return pthat, kin, {"generated": np.ones(len(met), bool), "H_T": c_ht, "2 AK8": base,
                   "M_T, MET <= pT(J0)": base & reachable(j0["pt"]),
                   "M_T, MET <= pT(J0)/2 + gen MET": base & reachable(0.5 * j0["pt"] + met),
                   "M_T gen MET": base & real}


def run_sample(lo: float, hi: float | None, n: int, seed: int, batch: int, power: float = 2.0,
               process: str = "qcd", extra: tuple = ()) -> dict:
    """Generate ``n`` events in [lo, hi) and return pT-hat, weights, conditions and sigmaGen (pb)."""
    p = _pythia(lo, hi, seed, power, process, extra)
    pth, ws, conds, kins = [], [], {c: [] for c in CONDITIONS}, []
    t = time.process_time()
    done = 0
    while done < n:
        b = p.nextBatch(min(batch, n - done))
        done += len(b)
        pt_hat, kin, c = conditions(b)
        pth.append(pt_hat)
        kins.append(kin)
        ws.append(ak.to_numpy(b.info.weights[:, 0]).astype(np.float64))
        for k in CONDITIONS:
            conds[k].append(c[k])
    info = p.infoPython()
    kin = {k: ({f: np.concatenate([x[k][f] for x in kins]) for f in kins[0][k]} if isinstance(kins[0][k], dict)
               else np.concatenate([x[k] for x in kins])) for k in kins[0]}
    return {"pthat": np.concatenate(pth), "w": np.concatenate(ws), "kin": kin,
            "cond": {k: np.concatenate(v) for k, v in conds.items()},
            "sigma_pb": info.sigmaGen() * PB_PER_MB, "sigma_err_pb": info.sigmaErr() * PB_PER_MB,
            "cpu_s": time.process_time() - t, "lo": lo, "hi": hi}


def toy_pass(kin: dict, toys: int, rng: np.random.Generator, jer_scale: float = 1.0, noise: float = 28.0,
             cuts: Cuts = Cuts()) -> np.ndarray:
    """Per event: the fraction of ``toys`` detector toys that pass the preselection.

    The toy detector: J0 and J1 (generator AK8) get the fast detector's Gaussian jet response
    (``samples.detector.jer`` at their pT, times ``jer_scale``); the MET is the true MET plus what
    the two jets lose or gain plus an isotropic Gaussian of ``noise`` GeV per component (pileup and
    the rest of the event: sqrt(33^2 - 18^2) = 28 GeV, the MET_x resolution of 200-300 GeV dijets at
    pileup 35 with the jets' part taken out, docs/samples.md). H_T is the generator's. The 1e-3
    response tail is left out (the review found it changes the fake-MET rate by nothing).
    """
    from svjscout.samples.detector import jer

    j0, j1 = kin["j0"], kin["j1"]
    n = len(j0["pt"])
    out = np.zeros(n)
    cand = (kin["ht"] > cuts.ht_min) & (j1["pt"] > 0.6 * cuts.ak8_pt_min)
    idx = np.flatnonzero(cand)
    if len(idx) == 0:
        return out
    shape = (len(idx), toys)
    pts = []
    met_x = np.repeat(kin["met_x"][idx, None], toys, 1) + rng.normal(0.0, noise, shape)
    met_y = np.repeat(kin["met_y"][idx, None], toys, 1) + rng.normal(0.0, noise, shape)
    for j in (j0, j1):
        pt = j["pt"][idx, None]
        r = 1.0 + jer_scale * jer(pt) * rng.standard_normal(shape)
        smeared = pt * np.clip(r, 0.0, None)
        lost = pt - smeared  # what the jet loses goes into the MET, along the jet
        met_x += lost * np.cos(j["phi"][idx, None])
        met_y += lost * np.sin(j["phi"][idx, None])
        pts.append(smeared)
    a = {"pt": pts[0].ravel(), **{f: np.repeat(j0[f][idx], toys) for f in ("eta", "phi", "mass")}}
    b = {"pt": pts[1].ravel(), **{f: np.repeat(j1[f][idx], toys) for f in ("eta", "phi", "mass")}}
    # the two leading after smearing: swap where J1 came out harder
    swap = b["pt"] > a["pt"]
    a, b = ({f: np.where(swap, b[f], a[f]) for f in a}, {f: np.where(swap, a[f], b[f]) for f in a})
    met = np.hypot(met_x, met_y).ravel()
    phi = np.arctan2(met_y, met_x).ravel()
    mt = transverse_mass(a, b, met, phi)
    with np.errstate(divide="ignore", invalid="ignore"):
        rt = np.where(mt > 0, met / mt, 0.0)
    dphi = np.minimum(np.abs(delta_phi(a["phi"], phi)), np.abs(delta_phi(b["phi"], phi)))
    ok = ((a["pt"] >= cuts.ak8_pt_min) & (b["pt"] >= cuts.ak8_pt_min) & (np.abs(a["eta"]) <= cuts.ak8_abs_eta_max)
          & (np.abs(b["eta"]) <= cuts.ak8_abs_eta_max) & (np.abs(a["eta"] - b["eta"]) < cuts.deta_max)
          & (mt > cuts.mt_min) & (rt > cuts.rt_min) & (dphi < cuts.dphi_min_max))
    out[idx] = ok.reshape(shape).mean(axis=1)
    return out


def table(samples: list[dict], edges: list[float], lumi_pb: float, threshold: float,
          names: tuple[str, ...] = CONDITIONS) -> list[str]:
    """The printed table: per pT-hat bin and condition, sigma x fraction (events at ``lumi_pb``).
    A condition is a boolean or a probability per event (the toys' pass fraction): the event then
    counts with its weight times that probability."""
    rows = []
    totals = {c: [0.0, 0.0, 0.0, 0.0] for c in names}  # below: y, var; above: y, var
    for s in samples:
        norm = s["sigma_pb"] * lumi_pb / s["w"].sum()  # events per unit of weight
        for lo, hi in zip(edges[:-1], edges[1:]):
            inbin = (s["pthat"] >= lo) & (s["pthat"] < hi)
            if not inbin.any() or lo < s["lo"] or (s["hi"] is not None and lo >= s["hi"]):
                continue
            cells = []
            for c in names:
                wc = s["w"] * inbin * s["cond"][c]
                m = wc > 0
                y, var = norm * wc.sum(), norm**2 * np.square(wc).sum()
                t = totals[c]
                if hi <= threshold:
                    t[0] += y
                    t[1] += var
                else:
                    t[2] += y
                    t[3] += var
                cells.append(f"{y:.3g} +- {np.sqrt(var):.2g} ({int(m.sum())})")
            label = f"{lo:g}-{'inf' if not np.isfinite(hi) else f'{hi:g}'}"
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    head = ["| pT-hat [GeV] | " + " | ".join(f"{c}: events (MC)" for c in names) + " |",
            "|---|" + "---|" * len(names)]
    share = []
    for c in names:
        yb, vb, ya, va = totals[c]
        tot = yb + ya
        f = yb / tot if tot > 0 else float("nan")
        # error of f = yb / (yb + ya) with independent yb, ya
        ef = np.sqrt(ya**2 * vb + yb**2 * va) / tot**2 if tot > 0 else float("nan")
        share.append(f"{f:.2%} +- {ef:.2%}")
    foot = [f"| share below {threshold:g} | " + " | ".join(share) + " |"]
    return head + rows + foot


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=8000, help="events per sample [8000]")
    ap.add_argument("--lo", type=float, default=100.0, help="lower edge of the window [100 GeV]")
    ap.add_argument("--threshold", type=float, default=170.0, help="the production's pT-hat minimum [170 GeV]")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--lumi", type=float, default=138000.0, help="pb^-1 [138000]")
    ap.add_argument("--process", default="qcd", choices=("qcd", "wjets", "zjets"),
                    help="the process (W, Z: unbiased; use e.g. --lo 150 --threshold 200) [qcd]")
    ap.add_argument("--toys", type=int, default=200, help="toy-detector draws per event [200]")
    ap.add_argument("--pythia", action="append", default=[], metavar="SETTING",
                    help="extra Pythia line(s), after the process's (e.g. the power shower: "
                         "'SpaceShower:pTmaxMatch = 2')")
    args = ap.parse_args(argv)
    t = args.threshold
    power = 2.0 if args.process == "qcd" else 0.0
    extra = tuple(args.pythia)
    win = run_sample(args.lo, t, args.events, args.seed, args.batch, power, args.process, extra)
    prod = run_sample(t, None, args.events, args.seed + 1, args.batch, power, args.process, extra)
    edges = [args.lo, 120.0, 140.0, t, 200.0, 250.0, 300.0, 400.0, np.inf]
    edges = sorted({e for e in edges if e >= args.lo})
    print(f"{args.process} at generator level (Pythia 8 CP5, no pileup, no detector), {args.events} events per sample, "
          f"seeds {args.seed}/{args.seed + 1}, bias power {power:g}, {args.lumi / 1000:g} fb^-1"
          + (f"; extra Pythia settings: {'; '.join(extra)}" if extra else ""))
    for s in (win, prod):
        print(f"  pT-hat {s['lo']:g}-{s['hi'] if s['hi'] is not None else 'inf'}: sigmaGen "
              f"{s['sigma_pb']:.4g} +- {s['sigma_err_pb']:.2g} pb, {s['cpu_s']:.0f} CPU s")
    print("Events at the lumi passing each cumulative condition (MC events in brackets):")
    print("\n".join(table([win, prod], edges, args.lumi, t)))
    rng = np.random.default_rng(args.seed)
    toys = {"toy detector": 1.0, "toy, JER x1.5": 1.5, "toy, JER x2": 2.0}
    for s in (win, prod):
        for name, scale in toys.items():
            s["cond"][name] = toy_pass(s["kin"], args.toys, rng, jer_scale=scale)
    print(f"\nWith a toy detector ({args.toys} toys per event; J0, J1 smeared with the fast detector's JER, "
          "times 1, 1.5, 2; MET = true MET + what J0, J1 lose + 28 GeV per component; the full preselection):")
    print("\n".join(table([win, prod], edges, args.lumi, t, ("2 AK8", *toys))))

if __name__ == "__main__":
    main()
