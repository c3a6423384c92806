"""Generation efficiency of preselected QCD (issue 30): each step against brute force, same parents.

The same QCD parents (seed, number of events fixed; the training recipe's settings: pT-hat > 170
GeV biased with power 2, pileup 35, generator H_T > 350 GeV, 40 detector copies with the tail
sampled 20x, the corrected detector) are generated with each efficiency step switched on in turn,
in this one process (CPU = this process's ``process_time`` around ``generate_file``), then passed
through the real processor (``svjscout.jobs.commands_skim``) with a loose selection; the proxy and
the full preselection are applied to its skim. Figure of merit: Kish's effective number of
preselected events counted over parents, N_eff = (sum_p W_p)^2 / sum_p W_p^2 (W_p the summed
weight of parent p's preselected copies), per CPU-hour.

Steps: ``baseline`` (brute force, the recipe as it is); ``shared pileup`` (one pruned library per
file); ``roulette`` (keep probability from generator-level real MET and R_T, weights 1/p);
``both``; ``tail strata`` (stratified tail copies instead of the 20x tail bias,
``GenerationConfig.tail_strata``; with K = 40 or 10 copies, alone or with the others). The
baseline is run with the roulette at p_min = 1, which writes the same file as without it
(tests/test_efficiency.py) and records every parent's generator features (for the study); its CPU
is counted without the features' own time (``timing['roulette']``).

Bias check: each step's weighted yield and its shapes (M_T, R_T, dphi_min, leading AK8 jet pT) at
the proxy selection against the baseline's, with parent-aware errors on both sides: the pull of
the yield and chi2/ndf of the shapes. The samples share the parents, so these errors are
conservative (the correlated part counts twice). The yield at the full preselection is compared too
(its errors are the baseline's N_eff ~ 5 at 5,000 parents: a loose check). Under each row, the
proxy and the full preselection split by the copies that pass: core (no hard jet in the
jet-response tail) and tail (at least one), :func:`core_tail_split`.

With ``--study`` it prints, for the baseline's parents, how the chance to pass is distributed over
generator-level variables (the invisible particles' |sum pT|, generator R_T, H_T, leading jet pT):
the share of the proxy yield and of sum W^2 above thresholds, what chose the predictor.

Usage: python benchmarks/bench_generation_efficiency.py [--parents 5000] [--seed 4243] [--study] [--proxy-rt 0.10]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_generate import hist_with_parent_errors, n_eff_over_parents  # the same folder (run as a script)

PILEUP = 35.0
COMMON = {"process": "qcd", "seed": 4243, "pileup": PILEUP, "ht_min": 350.0, "detector_copies": 40,
          "tail_bias": 20.0, "chunk_size": 500, "extra_settings": ["UncertaintyBands:doVariations = off"]}
STEPS = {  # label: GenerationConfig fields on top of COMMON
    "baseline": {"roulette": True, "roulette_p_min": 1.0},
    "shared pileup": {"shared_pileup": True},
    "roulette": {"roulette": True},
    "roulette + shared pileup": {"roulette": True, "shared_pileup": True},
    "roulette (M_T 400 p_min 0.3) + shared": {"roulette": True, "roulette_mt": 400.0, "roulette_p_min": 0.3,
                                              "shared_pileup": True},
    # not the same parents: pT-hat spectrum sampled with power 1 instead of 2 (CPU where the yield is)
    "roulette + shared + bias power 1": {"roulette": True, "shared_pileup": True, "bias_power": 1.0},
    # stratified tail copies (detector.tail_strata_copies) instead of the 20x tail bias: the same parents
    "tail strata": {"tail_strata": True, "tail_bias": 1.0},
    "tail strata + shared pileup": {"tail_strata": True, "tail_bias": 1.0, "shared_pileup": True},
    "tail strata K=10": {"tail_strata": True, "tail_bias": 1.0, "detector_copies": 10},
    "tail strata K=10 + shared pileup": {"tail_strata": True, "tail_bias": 1.0, "shared_pileup": True,
                                         "detector_copies": 10},
    "tail strata K=10 + shared + roulette": {"tail_strata": True, "tail_bias": 1.0, "shared_pileup": True,
                                             "detector_copies": 10, "roulette": True},
}
DEFAULT_STEPS = ("baseline", "shared pileup", "roulette", "roulette + shared pileup")
EDGES = {"mt": np.array([650, 800, 1000, 1300, 1700, 2500, 8000.0]),
         "rt": np.array([0.0, 0.2, 0.24, 0.3, 0.4, 0.6, 5.0]),
         "dphi_min": np.array([0.0, 0.1, 0.2, 0.4, 0.6, 0.8]),
         "pt_j0": np.array([150, 300, 450, 600, 800, 1200, 6000.0])}
COLUMNS = ("weight", "gen_weight", "parent", "event", "mt", "rt", "dphi_min", "pt_j0", "met", "deta")


def generate(out: Path, parents: int, met_min: float, extra: dict) -> tuple[float, dict, dict]:
    """(CPU s, file metadata, the roulette of every chunk) of one generated file.

    With ``--keep``, a file generated before with the same configuration (``OUT.json`` beside it)
    is reused with its CPU time (no roulettes then: no study)."""
    import json
    from dataclasses import asdict

    from svjscout.samples import efficiency
    from svjscout.samples.generate import GenerationConfig, generate_file

    cache = out.with_suffix(".json")
    config = asdict(GenerationConfig(events=parents, met_min=met_min, **{**COMMON, **extra}))
    if out.exists() and cache.exists():
        saved = json.loads(cache.read_text())
        if saved["config"] == json.loads(json.dumps(config)):
            return saved["cpu"], {"timing": saved["timing"]}, {}

    captured: dict[int, efficiency.Roulette] = {}
    original = efficiency.choose_parents

    def capture(cfg, chunk, fs, ht_min, rows=None):  # the same call; its result kept for the study
        res = original(cfg, chunk, fs, ht_min, rows=rows)
        if res is not None:
            captured[chunk] = res
        return res

    efficiency.choose_parents = capture
    efficiency._LIBRARIES.clear()  # every step builds its own library: like for like
    try:
        cfg = GenerationConfig(events=parents, met_min=met_min, **{**COMMON, **extra})
        t0 = time.process_time()
        meta = generate_file(cfg, out)
        cpu = time.process_time() - t0
    finally:
        efficiency.choose_parents = original
    cache.write_text(json.dumps({"config": config, "cpu": cpu, "timing": meta["timing"]}))
    return cpu, meta, captured


def preselect(path: Path, rt_min: float) -> dict[str, np.ndarray]:
    """Skim columns of the events passing the preselection with R_T > ``rt_min`` (the processor)."""
    import awkward as ak
    import yaml

    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    with tempfile.TemporaryDirectory() as tmp:
        spec = {"name": "efficiency", "datasets": {"qcd": {"kind": "background", "files": [str(path.resolve())]}},
                "executor": {"name": "iterative", "chunksize": 100000},
                "analysis": {"cuts": {"rt_min": rt_min}}}
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump(spec))
        run_processor(load_job(str(job), {}), skim_dir=str(Path(tmp) / "skim"))
        files = sorted((Path(tmp) / "skim").rglob("*.parquet"))
        parts = [ak.from_parquet(str(p), columns=list(COLUMNS)) for p in files]
    if not parts:
        return {c: np.zeros(0) for c in COLUMNS}
    table = ak.concatenate(parts)
    return {c: ak.to_numpy(table[c]) for c in COLUMNS}


def yield_and_error(w: np.ndarray, parent: np.ndarray) -> tuple[float, float]:
    """(sum w, its error with the copies of a parent summed before squaring)."""
    if len(w) == 0:
        return 0.0, 0.0
    _, inv = np.unique(parent, return_inverse=True)
    return float(w.sum()), float(np.sqrt(np.sum(np.bincount(inv, w) ** 2)))


def shape_chi2(a: dict, b: dict, var: str) -> tuple[float, int]:
    """chi2 and ndf of the normalised shapes of ``var`` in samples ``a`` and ``b``."""
    v1, s1 = hist_with_parent_errors(a[var], a["weight"], a["parent"], EDGES[var])
    v2, s2 = hist_with_parent_errors(b[var], b["weight"], b["parent"], EDGES[var])
    n1, n2 = v1.sum(), v2.sum()
    ok = (s1 + s2) > 0
    chi2 = float(np.sum((v1 / n1 - v2 / n2)[ok] ** 2 / (s1 / n1**2 + s2 / n2**2)[ok]))
    return chi2, int(ok.sum()) - 1


def core_tail_split(path: Path, sel: dict, n_copies: int, strata: bool) -> str:
    """Yield, its parent-aware error and N_eff of ``sel`` from the copies with no hard jet in the
    tail (core) and with at least one (tail). With ``strata`` the copy number (from ``event``)
    gives the stratum (``tail_strata_allocation``'s core copies come first; a parent without hard
    jets, all core, counts its later copies as tail: rare in this QCD); otherwise a copy
    is a tail copy when its genWeight is below 0.3 x the largest of its parent's written copies
    (the tail's likelihood ratio p/q = 0.05 against ~1)."""
    import uproot

    from svjscout.samples.detector import tail_strata_allocation

    if strata:
        copy = (sel["event"].astype(np.int64) - 1) % n_copies
        core = copy < tail_strata_allocation(np.array([1]), n_copies)[0][0]
    else:
        t = uproot.open(path)["Events"].arrays(["parent", "genWeight"], library="np")
        parents, inv = np.unique(t["parent"], return_inverse=True)
        w_max = np.zeros(len(parents))
        np.maximum.at(w_max, inv, t["genWeight"].astype(np.float64))
        number = sel["parent"].astype(np.int64) & ((1 << 40) - 1)  # the skim's parent: run << 40 | parent
        core = sel["gen_weight"] > 0.3 * w_max[np.searchsorted(parents, number)]
    out = []
    for label, m in (("core", core), ("tail", ~core)):
        w, par = sel["weight"][m], sel["parent"][m]
        y, e = yield_and_error(w, par)
        out.append(f"{label}: yield {y:.3g} +- {e:.2g}, N_eff {n_eff_over_parents(w, par):.1f} "
                   f"({len(np.unique(par))} parents)")
    return "; ".join(out)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


def select(sel: dict, rt_min: float) -> dict:
    m = sel["rt"] > rt_min
    return {k: v[m] for k, v in sel.items()}


def study(sel: dict, roulettes: dict, full_rt: float, save: Path | None = None) -> None:
    """Which generator-level variable separates the parents that pass from those that never do."""
    from svjscout.samples.efficiency import FEATURES

    feats = {k: np.concatenate([roulettes[c].features[k] for c in sorted(roulettes)]) for k in FEATURES}
    n = len(feats["nu_pt"])
    parent_number = (sel["parent"].astype(np.int64) & ((1 << 40) - 1)) - 1  # chunk * chunk_size + position
    W = np.bincount(parent_number, sel["weight"], n)
    if save is not None:  # per generated parent: features, W at the proxy and at the full preselection
        full = sel["rt"] > full_rt
        np.savez(save, W=W, W_full=np.bincount(parent_number[full], sel["weight"][full], n), **feats)
    print(f"\nstudy: {n} generated parents, {int((W > 0).sum())} pass the proxy in some copy "
          f"({100 * (W > 0).mean():.1f} %); share of the proxy yield (sum W) and of sum W^2 above a threshold, "
          f"and of the parents (CPU):")
    for var, cuts in (("nu_pt", (10, 20, 30, 40, 60)), ("rt", (0.05, 0.1, 0.15, 0.2)), ("ht", (600, 800, 1000, 1400)),
                      ("mt", (400, 500, 600, 700)),
                      ("pt_j0", (300, 400, 600, 800))):
        for c in cuts:
            above = feats[var] >= c
            yld, w2 = W[above].sum() / W.sum(), (W[above] ** 2).sum() / (W**2).sum()
            print(f"  {var:>6} >= {c:<6g}: parents {100 * above.mean():5.1f} %  yield {100 * yld:5.1f} %"
                  f"  sum W^2 {100 * w2:5.1f} %  pass-rate {100 * (W[above] > 0).mean():5.1f} %"
                  f" (below {100 * (W[~above] > 0).mean():5.1f} %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parents", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=4243, help="the study that chose the predictor used 4242")
    ap.add_argument("--proxy-rt", type=float, default=0.10, help="the proxy selection: preselection with R_T > this")
    ap.add_argument("--steps", default=",".join(DEFAULT_STEPS), help="comma-separated subset of: " + ", ".join(STEPS))
    ap.add_argument("--study", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the generated files in this folder")
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    from svjscout.core.cuts import Cuts

    COMMON["seed"] = a.seed
    full_rt = Cuts().rt_min
    met_min = 0.95 * a.proxy_rt * Cuts().mt_min  # the MET skim stays looser than the proxy
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"QCD, {a.parents} parents, seed {COMMON['seed']}, pileup {PILEUP:g}, K = {COMMON['detector_copies']}, "
              f"tail x{COMMON['tail_bias']:g}, MET skim {met_min:.0f} GeV; "
              f"proxy = preselection with R_T > {a.proxy_rt:g}")
        print(f"{'step':<40} {'CPU s':>7} {'s/parent':>8} {'N_eff proxy':>11} {'/CPU-h':>8} {'gain':>5} "
              f"{'N_eff full':>10} {'/CPU-h':>7} {'gain':>5}  bias vs baseline (proxy): yield pull, shape chi2/ndf")
        base = None
        for label in a.steps.split(","):
            cpu, meta, roulettes = generate(work / f"qcd_{_slug(label)}.root", a.parents, met_min, STEPS[label])
            if label == "baseline":
                cpu -= meta["timing"].get("roulette", 0.0)  # the features are the study's, not the baseline's
            sel = preselect(work / f"qcd_{_slug(label)}.root", a.proxy_rt)
            full = select(sel, full_rt)
            ne_p = n_eff_over_parents(sel["weight"], sel["parent"])
            ne_f = n_eff_over_parents(full["weight"], full["parent"])
            rate_p, rate_f = ne_p / cpu * 3600, ne_f / cpu * 3600
            bias = ""
            if base is None:
                base = {"sel": sel, "full": full, "rate_p": rate_p, "rate_f": rate_f}
                if a.study and roulettes:
                    study(sel, roulettes, full_rt, work / "study.npz" if a.keep else None)
            else:
                y1, e1 = yield_and_error(sel["weight"], sel["parent"])
                y0, e0 = yield_and_error(base["sel"]["weight"], base["sel"]["parent"])
                pull = (y1 - y0) / np.hypot(e0, e1)
                shapes = [shape_chi2(sel, base["sel"], v) for v in EDGES]
                bias = f"{pull:+.2f}, " + " ".join(f"{v} {c:.1f}/{n}" for v, (c, n) in zip(EDGES, shapes, strict=True))
                y1, e1 = yield_and_error(full["weight"], full["parent"])
                y0, e0 = yield_and_error(base["full"]["weight"], base["full"]["parent"])
                bias += (f"; full: yield {y1:.3g} +- {e1:.2g} vs {y0:.3g} +- {e0:.2g}, "
                         f"pull {(y1 - y0) / np.hypot(e0, e1):+.2f}")
            print(f"{label:<40} {cpu:>7.1f} {cpu / a.parents * 1e3:>6.1f}ms {ne_p:>11.1f} {rate_p:>8.0f} "
                  f"{rate_p / base['rate_p']:>5.2f} {ne_f:>10.1f} {rate_f:>7.0f} "
                  f"{(rate_f / base['rate_f']) if base['rate_f'] else float('nan'):>5.2f}  {bias}", flush=True)
            fields = {**COMMON, **STEPS[label]}
            for name, part in (("proxy", sel), ("full", full)):
                split = core_tail_split(work / f"qcd_{_slug(label)}.root", part, fields["detector_copies"],
                                        fields.get("tail_strata", False))
                print(f"    {name} by the copies that pass: {split}")
            t = meta["timing"]
            print("    time split (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()), flush=True)


if __name__ == "__main__":
    main()
