"""MET resolution of the fast detector against CMS JME-17-001 (issue 30 item 1).

Part 1, the hadronic recoil. Inclusive Z -> nu nu events (Pythia 8, CP5, Drell-Yan Z with
81 < m < 101 GeV, like CMS's Z -> mu mu selection; the boson's qT is the generator Z's, which for
a resolution is equivalent to measuring the muons) get exactly n = 0, 10, ..., 50 overlaid
minimum-bias events each (the same parents and the same library for every n) and go through
``samples/detector.py``. The hadronic recoil is u = sum of all PF candidates' pT (the boson decays
to neutrinos, none is a PF candidate; CMS's u = -(MET + qT) with a visible boson is the same
sum), so u ~ -qT; u_par = u . qT/|qT| and u_perp its perpendicular component. Resolutions: sigma(u_par + qT) and
sigma(u_perp), as half the 16-84 % interval (a Gaussian's sigma, robust to the few far tails)
with the RMS beside it, against n and against sum E_T (scalar pT sum of all PF candidates).

Two MET flavours are measured: "PF" with every PF candidate, charged pileup included
(``chs=False``): what CMS's PF MET and the HLT PF MET sum, the one JME-17-001 parametrises; and
"CHS", the candidates the generator writes (charged pileup removed), for reference; and "PF,
shipped", the PF flavour through the detector before issue 30 (``DetectorParams.shipped_v1``).

The CMS parametrisation (PF pTmiss, 2016 data, Z -> mu mu): sigma = sqrt(sigma_c^2 +
N_vtx / 0.70 * sigma_PU^2), with N_vtx = 1 + 0.70 n (the hard vertex plus a 70 % efficiency per
pileup vertex), and sigma = sigma_0 + sigma_s sqrt(sum E_T). The parameter values are in
``CMS`` below with where they were read (the N_vtx ones are unverified); override them with
``--cms`` if a better reading exists.

Part 2, the fake-MET tail (the review's figure): 200-300 GeV pT-hat QCD dijets with Poisson(35)
pileup, the same parents and overlay through the detector as shipped (``DetectorParams.shipped_v1``:
pileup clustered into the jets and JER-smeared on top of the overlay) and as now (pileup once),
K jet-level copies each: P(MET > 156 GeV) and the MET_x resolution.

Usage: python benchmarks/bench_met_resolution.py [--events 1500] [--parents 600] [--copies 40]
       [--figure docs/met_resolution.png]
"""

from __future__ import annotations

import argparse
import json
import time

import awkward as ak
import numpy as np

from svjscout.samples import detector
from svjscout.samples.generate import _final_state, _make_pythia
from svjscout.samples.processes import BASE, MINBIAS

#: JME-17-001 (JINST 14 (2019) P07004, arXiv:1903.06078), PF pTmiss in 2016 Z data.
#: sigma_0, sigma_s (GeV, sqrt(GeV)), resolution vs sum E_T: the preliminary version's Table 3
#: (CMS-PAS-JME-17-001, p20) as implemented in Rivet's MET_SMEAR_CMS_RUN2 (alisw/rivet,
#: include/Rivet/Tools/ExptSmearingFunctions.hh: u_par 2.0 + 0.64 sqrt(sum E_T), u_perp
#: -1.5 + 0.68 sqrt(sum E_T)), read with the `find_string`/`read_file` tools.
#: sigma_c, sigma_PU (GeV), resolution vs N_vtx: NOT found in any stored copy (the `search` tool
#: reached the paper's public page and arXiv records but not its tables); the values are a
#: recollection of the paper's table, unverified: check them against the paper (--cms overrides).
CMS = {
    "u_par": {"sigma_c": 14.7, "sigma_pu": 4.0, "sigma_0": 2.0, "sigma_s": 0.64},
    "u_perp": {"sigma_c": 11.6, "sigma_pu": 3.8, "sigma_0": -1.5, "sigma_s": 0.68},
}
VERTEX_EFFICIENCY = 0.70
MET_CUT = 156.0  # R_T > 0.24 and M_T > 650 GeV imply MET > 156 GeV

Z_SETTINGS = BASE + [
    "WeakSingleBoson:ffbar2gmZ = on",  # Drell-Yan Z, its qT from the shower (as CMS's inclusive sample)
    "WeakZ0:gmZmode = 2",  # pure Z
    "PhaseSpace:mHatMin = 81.",
    "PhaseSpace:mHatMax = 101.",
    "23:onMode = off",
    "23:onIfAny = 12 14 16",
]
QCD_SETTINGS = BASE + ["HardQCD:all = on", "PhaseSpace:pTHatMin = 200.", "PhaseSpace:pTHatMax = 300."]


def cms_vs_pileup(component: str, n_pu: np.ndarray, cms: dict = CMS) -> np.ndarray:
    """CMS's resolution at n pileup interactions: sqrt(sigma_c^2 + N_vtx / 0.70 sigma_PU^2)."""
    p = cms[component]
    n_vtx = 1.0 + VERTEX_EFFICIENCY * np.asarray(n_pu, dtype=float)
    return np.sqrt(p["sigma_c"] ** 2 + n_vtx / VERTEX_EFFICIENCY * p["sigma_pu"] ** 2)


def cms_vs_sumet(component: str, sum_et: np.ndarray, cms: dict = CMS) -> np.ndarray:
    """CMS's resolution at sum E_T: sigma_0 + sigma_s sqrt(sum E_T)."""
    p = cms[component]
    return p["sigma_0"] + p["sigma_s"] * np.sqrt(np.asarray(sum_et, dtype=float))


def width(x: np.ndarray) -> tuple[float, float, float]:
    """(half the 16-84 % interval, its bootstrap-free error sigma / sqrt(2 n) x 1.3, RMS)."""
    lo, hi = np.percentile(x, [15.865, 84.135])
    s = 0.5 * (hi - lo)
    return float(s), float(1.3 * s / np.sqrt(2 * max(len(x), 1))), float(np.std(x))


def flatten(fs: dict) -> tuple[dict, np.ndarray]:
    counts = ak.to_numpy(ak.num(fs["pt"]))
    return {k: ak.to_numpy(ak.flatten(v)) for k, v in fs.items()}, counts


def overlay(fs: dict, lib: dict, n_pu: np.ndarray, rng: np.random.Generator) -> dict:
    """Every event plus n_pu[i] minimum-bias events drawn from the library (with replacement)."""
    n_lib = len(lib["pt"])
    draw = rng.integers(0, n_lib, int(n_pu.sum()))
    per_event = ak.to_numpy(ak.sum(ak.unflatten(ak.num(lib["id"])[draw], n_pu), axis=1))
    out = {}
    for key, hard in fs.items():
        out[key] = ak.concatenate([hard, ak.unflatten(ak.flatten(lib[key][draw]), per_event)], axis=1)
    return out


def measure_events(fs: dict, params: detector.DetectorParams, rng: np.random.Generator,
                   copies: int = 1, copy_seed: int = 0):
    """Detector response of jagged events: yields (copy, MET x, MET y, sum E_T) per copy."""
    flat, counts = flatten(fs)
    n = len(counts)
    event = np.repeat(np.arange(n), counts)
    vis = ~detector.is_invisible(flat["id"]) & (np.abs(flat["eta"]) < 5.0)
    if not params.jet_pileup:
        vis &= ~flat["pileup"]
    jet = detector.generator_jets(flat["pt"], flat["eta"], flat["phi"], vis, counts, params)
    meas = detector.measure(flat["pt"], flat["eta"], flat["phi"], flat["id"], flat["charge"], event, n, rng,
                            params, pileup=flat["pileup"], jet=jet)
    for copy in range(copies):
        crng = np.random.default_rng([copy_seed, copy, 11])
        factors, _ = detector.jet_factors(meas, crng, params)
        pt, keep = detector.cell_pt(meas, factors, params)  # the PF candidates, as detector.candidates
        t, c = meas.tracks, meas.cells
        mx = -(np.bincount(t["event"], t["pt"] * np.cos(t["phi"]), n)
               + np.bincount(c["event"][keep], (pt * np.cos(c["phi"]))[keep], n))
        my = -(np.bincount(t["event"], t["pt"] * np.sin(t["phi"]), n)
               + np.bincount(c["event"][keep], (pt * np.sin(c["phi"]))[keep], n))
        yield copy, mx, my, np.bincount(t["event"], t["pt"], n) + np.bincount(c["event"][keep], pt[keep], n)


def batches(settings: list[str], n_events: int, seed: int, size: int = 500) -> list[dict]:
    out = []
    pythia = _make_pythia(settings, seed)
    done = 0
    while done < n_events:
        batch = pythia.nextBatch(min(size, n_events - done))
        out.append((batch, _final_state(pythia, batch)))
        done += len(batch)
    return out


def z_qt(batch) -> tuple[np.ndarray, np.ndarray]:
    """(qx, qy) of the last Z copy of every event (after the shower's recoils)."""
    prt = batch.prt
    z = prt[abs(prt.id) == 23]
    last = z[:, -1]
    return ak.to_numpy(last.p.px), ak.to_numpy(last.p.py)


def recoil_study(n_events: int, pileups: list[int], seed: int, n_lib: int) -> dict:
    """u_par / u_perp resolutions per pileup count, for the PF (all) and CHS candidates."""
    t0 = time.process_time()
    zs = batches(Z_SETTINGS, n_events, seed)
    mb = _make_pythia(MINBIAS, seed + 104_729)
    lib = _final_state(mb, mb.nextBatch(n_lib))
    lib["pileup"] = ak.ones_like(lib["id"], dtype=bool)
    t_pythia = time.process_time() - t0
    flavours = {"PF": detector.DetectorParams(chs=False), "CHS": detector.DetectorParams(),
                "PF, shipped": detector.DetectorParams.shipped_v1(chs=False)}
    rows = {f: {} for f in flavours}
    pooled = {f: [] for f in flavours}
    for n in pileups:
        per = {f: {"upar": [], "uperp": [], "sumet": [], "qt": []} for f in flavours}
        for b, (batch, fs) in enumerate(zs):
            qx, qy = z_qt(batch)
            qt = np.hypot(qx, qy)
            rng = np.random.default_rng([seed, n, b])
            ev = overlay(fs, lib, np.full(len(qt), n), rng) if n > 0 else fs
            for flav, params in flavours.items():
                for _, mx, my, sumet in measure_events(ev, params, np.random.default_rng([seed, n, b, 1]),
                                                       copy_seed=seed + b):
                    ux, uy = -mx, -my  # u = sum of the PF candidates: the boson (nu nu) is part of the MET
                    upar = (ux * qx + uy * qy) / np.maximum(qt, 1e-9)
                    uperp = (uy * qx - ux * qy) / np.maximum(qt, 1e-9)
                    per[flav]["upar"].append(upar + qt)
                    per[flav]["uperp"].append(uperp)
                    per[flav]["sumet"].append(sumet)
                    per[flav]["qt"].append(qt)
        for flav in flavours:
            d = {k: np.concatenate(v) for k, v in per[flav].items()}
            rows[flav][n] = {"upar": width(d["upar"]), "uperp": width(d["uperp"]),
                             "sumet": float(np.mean(d["sumet"])), "response": float(
                                 -np.mean(d["upar"] - d["qt"]) / np.mean(d["qt"])), "n": len(d["qt"])}
            pooled[flav].append(d)
    return {"rows": rows, "pooled": pooled, "cpu_pythia_s": t_pythia, "cpu_s": time.process_time() - t0}


def sumet_bins(pooled: list[dict], edges: np.ndarray) -> list[tuple]:
    d = {k: np.concatenate([p[k] for p in pooled]) for k in pooled[0]}
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (d["sumet"] >= lo) & (d["sumet"] < hi)
        if m.sum() < 200:
            continue
        out.append((float(np.mean(d["sumet"][m])), width(d["upar"][m]), width(d["uperp"][m]), int(m.sum())))
    return out


def tail_study(n_parents: int, copies: int, pileup: float, seed: int, n_lib: int) -> dict:
    """P(MET > 156 GeV) and MET_x resolution of 200-300 GeV dijets, shipped vs now, same parents."""
    (batch, fs), = batches(QCD_SETTINGS, n_parents, seed, size=n_parents)
    inv = ~ak.unflatten(detector.is_invisible(ak.to_numpy(ak.flatten(fs["id"]))), ak.num(fs["id"]))
    gen_met = np.hypot(ak.to_numpy(ak.sum(fs["pt"][~inv] * np.cos(fs["phi"][~inv]), axis=1)),
                       ak.to_numpy(ak.sum(fs["pt"][~inv] * np.sin(fs["phi"][~inv]), axis=1)))
    mb = _make_pythia(MINBIAS, seed + 104_729)
    lib = _final_state(mb, mb.nextBatch(n_lib))
    lib["pileup"] = ak.ones_like(lib["id"], dtype=bool)
    rng = np.random.default_rng([seed, 35])
    n_pu = rng.poisson(pileup, n_parents)
    with_pu = overlay(fs, lib, n_pu, rng)
    out = {}
    variants = {
        "shipped (pileup twice)": (with_pu, detector.DetectorParams.shipped_v1()),
        "now (pileup once)": (with_pu, detector.DetectorParams()),
        "now, no pileup": (fs, detector.DetectorParams()),
        "shipped, no pileup": (fs, detector.DetectorParams.shipped_v1()),
        "shipped, jet core off": (with_pu, detector.DetectorParams.shipped_v1(jer_stoch=0.0, jer_const=0.0,
                                                                               jer_noise=0.0)),
    }
    for label, (ev, params) in variants.items():
        mets, mxs, real = [], [], []
        for _, mx, my, _ in measure_events(ev, params, np.random.default_rng([seed, 1]), copies, copy_seed=seed):
            mets.append(np.hypot(mx, my))
            mxs.append(mx)
            real.append(gen_met)
        met, mx, real = np.concatenate(mets), np.concatenate(mxs), np.concatenate(real)
        above = met > MET_CUT
        k = int(above.sum())
        # parent-aware error: copies of one parent are correlated
        per_parent = above.reshape(copies, n_parents).mean(axis=0)
        out[label] = {"p": k / len(met), "err": float(np.std(per_parent) / np.sqrt(n_parents)), "k": k,
                      "n": len(met), "metx_sigma": width(mx)[0], "metx_rms": float(np.std(mx)),
                      "real50": float(np.mean(real[above] > 50.0)) if k else float("nan")}
    return out


def plot(result: dict, sumet: dict, path: str, cms: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    fig, axes = plt.subplots(1, 3, figsize=(27, 8.5))
    n_grid = np.linspace(0, 50, 101)
    for ax, comp, label in ((axes[0], "upar", r"$u_\parallel$"), (axes[1], "uperp", r"$u_\perp$")):
        key = "u_par" if comp == "upar" else "u_perp"
        c = cms_vs_pileup(key, n_grid, cms)
        ax.fill_between(n_grid, 0.8 * c, 1.2 * c, color="0.85", label=r"JME-17-001 PF $\pm$20 %")
        ax.plot(n_grid, c, "k-", label="JME-17-001 PF (2016 data; values unverified)")
        for flav, style in (("PF", "o"), ("CHS", "s"), ("PF, shipped", "x")):
            rows = result["rows"][flav]
            n = np.array(sorted(rows))
            s = np.array([rows[i][comp][0] for i in n])
            e = np.array([rows[i][comp][1] for i in n])
            name = {"PF": "PF (all candidates)", "CHS": "CHS candidates (as written)",
                    "PF, shipped": "PF, detector as shipped (pileup twice)"}[flav]
            ax.errorbar(n, s, e, fmt=style, label=f"this detector: {name}")
        ax.set_xlabel("pileup interactions")
        ax.set_ylabel(rf"$\sigma$({label}) [GeV]")
        ax.set_ylim(0, None)
        ax.legend(fontsize=16)
        mplhep.cms.label("fast-detector simulation", data=True, ax=ax, rlabel=r"Z$\to\nu\nu$, 13 TeV")
    ax = axes[2]
    grid = np.linspace(100, 2500, 100)
    for comp, i, color in (("u_par", 1, "C0"), ("u_perp", 2, "C1")):
        ax.plot(grid, cms_vs_sumet(comp, grid, cms), "-", color=color, label=f"JME-17-001 PAS {comp}")
        pts = sumet["PF"]
        ax.errorbar([p[0] for p in pts], [p[i][0] for p in pts], [p[i][1] for p in pts], fmt="o", color=color,
                    label=f"this detector {comp} (PF)")
    ax.set_xlabel(r"$\Sigma E_T$ [GeV]")
    ax.set_ylabel(r"$\sigma$ [GeV]")
    ax.legend(fontsize=16)
    mplhep.cms.label("fast-detector simulation", data=True, ax=ax, rlabel="13 TeV")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def print_sumet(sumet: dict, cms: dict) -> None:
    print("\n# Versus sum E_T (all pileup counts pooled)")
    print("| flavour | <sum E_T> | sigma(u_par) | CMS | ratio | sigma(u_perp) | CMS | ratio | events |")
    print("|---|---|---|---|---|---|---|---|---|")
    for flav, pts in sumet.items():
        for s, a, b, m in pts:
            ca, cb = cms_vs_sumet("u_par", s, cms), cms_vs_sumet("u_perp", s, cms)
            print(f"| {flav} | {s:.0f} | {a[0]:.1f} | {ca:.1f} | {a[0] / ca:.2f} | {b[0]:.1f} | {cb:.1f} | "
                  f"{b[0] / cb:.2f} | {m} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1500, help="Z events (the same at every pileup)")
    ap.add_argument("--pileups", default="0,10,20,30,40,50")
    ap.add_argument("--parents", type=int, default=600, help="dijet parents of the tail study (0: skip)")
    ap.add_argument("--copies", type=int, default=40, help="detector copies per dijet parent")
    ap.add_argument("--library", type=int, default=2000, help="minimum-bias library size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--figure", help="write the figure (PNG/PDF) here")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--cms", help="JSON overriding the CMS parameters, same layout as CMS")
    ap.add_argument("--replot", metavar="JSON", help="only draw --figure from a --json written before")
    args = ap.parse_args(argv)
    cms = {k: dict(v) for k, v in CMS.items()}
    if args.cms:
        for k, v in json.loads(args.cms).items():
            cms[k].update(v)
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        rows = {flav: {int(n): r for n, r in v.items()} for flav, v in saved["rows"].items()}
        print_sumet(saved["sumet"], cms)
        if args.figure:
            plot({"rows": rows}, saved["sumet"], args.figure, cms)
        return 0
    pileups = [int(x) for x in args.pileups.split(",")]

    res = recoil_study(args.events, pileups, args.seed, args.library)
    print(f"# Hadronic recoil, inclusive Z -> nu nu ({args.events} events at each pileup count), "
          f"CPU {res['cpu_s']:.0f} s (Pythia {res['cpu_pythia_s']:.0f} s)")
    print("| pileup | N_vtx | flavour | <sum E_T> | response | sigma(u_par) | CMS | ratio | sigma(u_perp) | CMS "
          "| ratio | RMS u_par / u_perp |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst = {}
    for flav in res["rows"]:
        for n, r in sorted(res["rows"][flav].items()):
            cp, cq = cms_vs_pileup("u_par", n, cms), cms_vs_pileup("u_perp", n, cms)
            rp, rq = r["upar"][0] / cp, r["uperp"][0] / cq
            worst[flav] = max(worst.get(flav, 0.0), abs(rp - 1), abs(rq - 1))
            print(f"| {n} | {1 + VERTEX_EFFICIENCY * n:.1f} | {flav} | {r['sumet']:.0f} | {r['response']:.2f} | "
                  f"{r['upar'][0]:.1f} +- {r['upar'][1]:.1f} | {cp:.1f} | {rp:.2f} | "
                  f"{r['uperp'][0]:.1f} +- {r['uperp'][1]:.1f} | {cq:.1f} | {rq:.2f} | "
                  f"{r['upar'][2]:.1f} / {r['uperp'][2]:.1f} |")
    for flav, w in worst.items():
        print(f"largest |ours/CMS - 1| over 0-50 interactions, {flav}: {w:.1%} (target 20 %)")
    print("\n# CMS's functional form fitted to ours: sigma^2 = sigma_c^2 + N_vtx / 0.70 sigma_PU^2 (GeV)")
    print("| flavour | component | sigma_c ours | sigma_c CMS | sigma_PU ours | sigma_PU CMS |")
    print("|---|---|---|---|---|---|")
    fits = {}
    for flav, rows in res["rows"].items():
        for comp, key in (("upar", "u_par"), ("uperp", "u_perp")):
            n = np.array(sorted(rows), dtype=float)
            s2 = np.array([rows[int(i)][comp][0] for i in n]) ** 2
            (c2, pu2), *_ = np.linalg.lstsq(np.c_[np.ones_like(n), (1 + VERTEX_EFFICIENCY * n) / VERTEX_EFFICIENCY],
                                            s2, rcond=None)
            fits[(flav, key)] = (float(np.sqrt(max(c2, 0))), float(np.sqrt(max(pu2, 0))))
            print(f"| {flav} | {key} | {fits[(flav, key)][0]:.1f} | {cms[key]['sigma_c']:.1f} | "
                  f"{fits[(flav, key)][1]:.2f} | {cms[key]['sigma_pu']:.2f} |")
    edges = np.array([0, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1700, 2000, 3000])
    sumet = {flav: sumet_bins(res["pooled"][flav], edges) for flav in res["pooled"]}
    print_sumet(sumet, cms)
    tail = {}
    if args.parents > 0:
        t0 = time.process_time()
        tail = tail_study(args.parents, args.copies, 35.0, args.seed, args.library)
        print(f"\n# 200-300 GeV pT-hat dijets, pileup 35: {args.parents} parents x {args.copies} copies "
              f"(CPU {time.process_time() - t0:.0f} s)")
        print("| detector | P(MET > 156 GeV) | copies above | MET_x sigma (16-84 %) | MET_x RMS | real MET > 50 GeV "
              "among them |")
        print("|---|---|---|---|---|---|")
        for label, r in tail.items():
            print(f"| {label} | {r['p']:.2e} +- {r['err']:.1e} | {r['k']} / {r['n']} | {r['metx_sigma']:.1f} GeV | "
                  f"{r['metx_rms']:.1f} GeV | {r['real50']:.0%} |")
    if args.figure:
        plot(res, sumet, args.figure, cms)
        print(f"\nfigure: {args.figure}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": res["rows"], "sumet": sumet, "tail": tail, "cms": cms,
                       "fits": {f"{a} {b}": v for (a, b), v in fits.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
