"""Rewrite scouting files as CMS writes ScoutingNano: LZMA 9, NanoAOD clusters, every collection.

For the read-throughput benchmark (benchmarks/bench_read.py, issue 33): our generator writes ZSTD
and only the branches svjscout reads, which hides what real files cost. This script copies every
event of the input files (all their branches, values unchanged: the processor gives the same
histograms on the copy as on the original) and adds what a Run-3 ScoutingNano file carries besides,
with plausible contents, so that reading only what the processor needs has something to skip:

* ``ScoutingParticle``: the track fields of the PF candidates (``vertex, normchi2, dz, dxy, dzsig,
  dxysig, lostInnerHits, quality, trk_pt, trk_eta, trk_phi, relative_trk_vars``; charged
  candidates get values, neutral ones zeros): for an input in the Run-3 layout (the generator's
  default, candidates in ``ScoutingPFCandidate``) a separate collection with the candidates'
  kinematics and pdgId, as today's ScoutingNano has it; for the older layout on the candidates;
* ``ScoutingPFJet`` (anti-kT R = 0.4 jets of the candidates above 20 GeV, with energy fractions,
  multiplicities, area and taggers), ``ScoutingPrimaryVertex`` (pileup + 1 vertices),
  ``ScoutingTrack`` (a quarter of the charged candidates, 24 fields), ``ScoutingMuon`` (27 fields),
  ``ScoutingElectron`` (22), ``ScoutingPhoton`` (13), ``ScoutingRho_fixedGridRhoFastjetAll``,
  ``bunchCrossing`` (the vertices and rho only where the input has none);
* trigger bits: 650 ``HLT_*`` and 450 ``L1_*`` booleans (NanoAOD files carry several hundred of each).

Floats that NanoAOD stores with reduced precision (the added collections) are rounded to a 10-bit
mantissa, as NanoAOD's ``precision=10`` does, which matters for how well they compress.

How CMS writes them (PhysicsTools/NanoAOD's NanoAODOutputModule): ``compressionAlgorithm = LZMA``,
``compressionLevel = 9``, ``autoFlush = -10000000``: the tree is flushed each time ~10 MB of
compressed data have been written, with the baskets resized (``OptimizeBaskets``) so that each
branch holds one basket per cluster. Here: clusters of N events, one basket per branch per
cluster (uproot writes one basket per branch per ``extend``), with N = 10 MB / the compressed
bytes per event measured on the first 200 events (``--cluster-mb``; ``--cluster-events`` fixes N).

``--ht-triggered F`` imitates an H_T-triggered stream (no MET skim) from the MET-skimmed
embedded sample: every event keeps its candidates, but only a random fraction F keeps its MET; the
others get a MET drawn from a Rayleigh distribution of width 25 GeV (QCD's resolution MET), far
below the prefilter's 156 GeV. A real H_T-triggered sample (samples/scouting_like/make.sh) needs
~25 CPU-minutes of Pythia; this one needs none.

    python benchmarks/write_cms_like.py OUTDIR [--sample embedded|DIR] [--repeat K]
        [--ht-triggered 0.01] [--compression LZMA:9] [--cluster-mb 10] [--seed 1] [--only qcd,ttbar]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

EMBEDDED = Path(__file__).resolve().parent.parent / "samples" / "embedded"

N_HLT, N_L1 = 650, 450


def compression_of(spec: str):
    """``LZMA:9`` -> ``uproot.LZMA(9)``."""
    name, _, level = spec.partition(":")
    return getattr(uproot, name.upper())(int(level or 1))


def reduce_mantissa(x: np.ndarray, bits: int = 10) -> np.ndarray:
    """float32 rounded to ``bits`` mantissa bits (NanoAOD's ``precision``; round half up on the bits).

    >>> reduce_mantissa(np.array([1.0001, 3.14159265], np.float32), 10).tolist()
    [1.0, 3.140625]
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    shift = 23 - bits
    u = x.view(np.uint32)
    mask = np.uint32((0xFFFFFFFF >> shift) << shift)
    rounded = ((u + np.uint32(1 << (shift - 1))) & mask).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isfinite(x), out, x)


def _jag(counts: np.ndarray, flat: dict) -> ak.Array:
    return ak.unflatten(ak.zip(flat), counts)


def _f(rng, n, loc=0.0, scale=1.0):
    return reduce_mantissa(rng.normal(loc, scale, n).astype(np.float32))


def _pf_extra(rng, pf_pt, pf_eta, pf_phi, charge) -> dict:
    """The Run-3 scouting PF candidates' track fields (charged: values; neutral: zeros)."""
    counts = ak.to_numpy(ak.num(pf_pt))
    n = int(counts.sum())
    pt = ak.to_numpy(ak.flatten(pf_pt))
    eta = ak.to_numpy(ak.flatten(pf_eta))
    phi = ak.to_numpy(ak.flatten(pf_phi))
    ch = ak.to_numpy(ak.flatten(charge)) != 0
    pu = rng.random(n) < 0.3  # charged candidates of pileup vertices (those CHS did not remove)
    z = np.where(ch, 1.0, 0.0).astype(np.float32)
    dz = np.where(pu, rng.normal(0, 4.0, n), rng.normal(0, 0.02, n)).astype(np.float32)
    dxy = rng.normal(0, 0.004, n).astype(np.float32)
    dz_err = np.abs(rng.normal(0.01, 0.004, n)).astype(np.float32) + 1e-3
    dxy_err = np.abs(rng.normal(0.004, 0.002, n)).astype(np.float32) + 5e-4
    fields = {
        "vertex": np.where(ch, np.where(pu, rng.integers(1, 40, n), 0), -1).astype(np.int32),
        "normchi2": reduce_mantissa(z * rng.gamma(2.0, 0.5, n).astype(np.float32)),
        "dz": reduce_mantissa(z * dz),
        "dxy": reduce_mantissa(z * dxy),
        "dzsig": reduce_mantissa(z * dz / dz_err),
        "dxysig": reduce_mantissa(z * dxy / dxy_err),
        "lostInnerHits": np.where(ch, rng.choice([-1, 0, 1, 2], n, p=[0.05, 0.8, 0.1, 0.05]), 0).astype(np.int32),
        "quality": np.where(ch, rng.choice([0, 4, 7], n, p=[0.05, 0.15, 0.8]), 0).astype(np.int32),
        "trk_pt": reduce_mantissa(z * pt * (1 + rng.normal(0, 0.01, n)).astype(np.float32)),
        "trk_eta": reduce_mantissa(z * (eta + rng.normal(0, 1e-3, n)).astype(np.float32)),
        "trk_phi": reduce_mantissa(z * (phi + rng.normal(0, 1e-3, n)).astype(np.float32)),
        "relative_trk_vars": ch,
    }
    return {k: ak.unflatten(v, counts) for k, v in fields.items()}


def _pf_jets(rng, pf) -> ak.Array:
    """ScoutingPFJet: anti-kT R = 0.4 jets of the candidates (pT > 20 GeV), with plausible extras."""
    from svjscout.processors.jets import cluster

    good = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
    jets = cluster(pf[good], 0.4, ptmin=20.0)
    counts = ak.to_numpy(ak.num(jets.pt))
    n = int(counts.sum())
    pt, eta = ak.to_numpy(ak.flatten(jets.pt)), ak.to_numpy(ak.flatten(jets.eta))
    e = pt * np.cosh(eta)
    frac = rng.dirichlet([6, 2, 3, 0.3, 0.2, 0.2, 0.2], n).T * e
    flat = {"pt": pt, "eta": eta, "phi": ak.to_numpy(ak.flatten(jets.phi)), "m": ak.to_numpy(ak.flatten(jets.mass))}
    flat = {k: reduce_mantissa(v.astype(np.float32)) for k, v in flat.items()}
    flat["area"] = _f(rng, n, 0.5, 0.03)
    for name, col in zip(
        (
            "chargedHadronEnergy",
            "neutralHadronEnergy",
            "photonEnergy",
            "electronEnergy",
            "muonEnergy",
            "HFHadronEnergy",
            "HFEMEnergy",
        ),
        frac,
    ):
        flat[name] = reduce_mantissa(col.astype(np.float32))
    for name, lam in (
        ("chargedHadronMultiplicity", 12),
        ("neutralHadronMultiplicity", 3),
        ("photonMultiplicity", 8),
        ("electronMultiplicity", 0.1),
        ("muonMultiplicity", 0.1),
        ("HFHadronMultiplicity", 0.5),
        ("HFEMMultiplicity", 0.5),
    ):
        flat[name] = rng.poisson(lam, n).astype(np.int32)
    flat["HOEnergy"] = reduce_mantissa((0.01 * e * rng.random(n)).astype(np.float32))
    flat["csv"] = reduce_mantissa(rng.random(n).astype(np.float32))
    flat["mvaDiscriminator"] = reduce_mantissa(rng.random(n).astype(np.float32))
    return _jag(counts, flat)


def _flat_fields(rng, n: int, fields: dict) -> dict:
    """n values per field; fields: name -> ('f', loc, scale) normal, ('e', low, scale) exponential,
    ('b', p, _) boolean, ('i', low, high) integer."""
    flat = {}
    for name, (kind, a, b) in fields.items():
        if kind == "f":
            flat[name] = _f(rng, n, a, b)
        elif kind == "e":
            flat[name] = reduce_mantissa((a + rng.exponential(b, n)).astype(np.float32))
        elif kind == "b":
            flat[name] = rng.random(n) < a
        else:
            flat[name] = rng.integers(a, b + 1, n).astype(np.int32)
    return flat


def _objects(rng, counts: np.ndarray, fields: dict) -> ak.Array:
    """A collection with ``counts`` objects per event and the fields of :func:`_flat_fields`."""
    counts = np.asarray(counts, dtype=np.int64)
    return _jag(counts, _flat_fields(rng, int(counts.sum()), fields))


MUON = {
    "pt": ("e", 3, 15),
    "eta": ("f", 0, 1.2),
    "phi": ("f", 0, 1.8),
    "m": ("f", 0.1057, 0),
    "type": ("i", 0, 7),
    "charge": ("i", -1, 1),
    "normchi2": ("e", 0, 1),
    "ecalIso": ("e", 0, 2),
    "hcalIso": ("e", 0, 3),
    "trackIso": ("e", 0, 2),
    "nValidStandAloneMuonHits": ("i", 0, 40),
    "nStandAloneMuonMatchedStations": ("i", 0, 4),
    "nValidRecoMuonHits": ("i", 0, 40),
    "nRecoMuonChambers": ("i", 0, 8),
    "nRecoMuonMatches": ("i", 0, 4),
    "nRecoMuonMatchedStations": ("i", 0, 4),
    "nValidPixelHits": ("i", 0, 5),
    "nTrackerLayersWithMeasurement": ("i", 5, 16),
    "trk_chi2": ("e", 0, 10),
    "trk_ndof": ("e", 5, 15),
    "trk_dxy": ("f", 0, 0.01),
    "trk_dz": ("f", 0, 0.05),
    "trk_qoverp": ("f", 0, 0.05),
    "trk_lambda": ("f", 0, 0.8),
    "trk_pt": ("e", 3, 15),
    "trk_phi": ("f", 0, 1.8),
    "trk_eta": ("f", 0, 1.2),
}
ELECTRON = {
    "pt": ("e", 5, 20),
    "eta": ("f", 0, 1.2),
    "phi": ("f", 0, 1.8),
    "m": ("f", 0, 0.001),
    "d0": ("f", 0, 0.01),
    "dz": ("f", 0, 0.05),
    "dEtaIn": ("f", 0, 0.005),
    "dPhiIn": ("f", 0, 0.02),
    "sigmaIetaIeta": ("e", 0.005, 0.005),
    "hOverE": ("e", 0, 0.05),
    "ooEMOop": ("e", 0, 0.02),
    "missingHits": ("i", 0, 2),
    "charge": ("i", -1, 1),
    "ecalIso": ("e", 0, 2),
    "hcalIso": ("e", 0, 3),
    "trackIso": ("e", 0, 2),
    "r9": ("e", 0.5, 0.3),
    "sMin": ("e", 0, 0.5),
    "sMaj": ("e", 0, 1),
    "seedId": ("i", 0, 1 << 30),
    "rechitZeroSuppression": ("b", 0.9, 0),
    "bestTrack_index": ("i", -1, 3),
}
PHOTON = {
    "pt": ("e", 5, 20),
    "eta": ("f", 0, 1.2),
    "phi": ("f", 0, 1.8),
    "m": ("f", 0, 0.001),
    "sigmaIetaIeta": ("e", 0.005, 0.005),
    "hOverE": ("e", 0, 0.05),
    "ecalIso": ("e", 0, 2),
    "hcalIso": ("e", 0, 3),
    "trkIso": ("e", 0, 2),
    "r9": ("e", 0.5, 0.3),
    "sMin": ("e", 0, 0.5),
    "sMaj": ("e", 0, 1),
    "seedId": ("i", 0, 1 << 30),
}
TRACK = {
    "tk_pt": ("e", 1, 5),
    "tk_eta": ("f", 0, 1.2),
    "tk_phi": ("f", 0, 1.8),
    "tk_chi2": ("e", 0, 10),
    "tk_ndof": ("e", 5, 15),
    "tk_charge": ("i", -1, 1),
    "tk_dxy": ("f", 0, 0.01),
    "tk_dz": ("f", 0, 3),
    "tk_nValidPixelHits": ("i", 0, 5),
    "tk_nTrackerLayersWithMeasurement": ("i", 5, 16),
    "tk_nValidStripHits": ("i", 0, 20),
    "tk_qoverp": ("f", 0, 0.2),
    "tk_lambda": ("f", 0, 0.8),
    "tk_dxy_Error": ("e", 0, 0.005),
    "tk_dz_Error": ("e", 0, 0.01),
    "tk_qoverp_Error": ("e", 0, 0.002),
    "tk_lambda_Error": ("e", 0, 0.001),
    "tk_phi_Error": ("e", 0, 0.001),
    "tk_dsz": ("f", 0, 3),
    "tk_dsz_Error": ("e", 0, 0.01),
    "tk_vtxInd": ("i", 0, 40),
    "tk_vx": ("f", 0, 0.002),
    "tk_vy": ("f", 0, 0.002),
    "tk_vz": ("f", 0, 4),
}
VERTEX = {
    "x": ("f", 0.1, 0.002),
    "y": ("f", -0.05, 0.002),
    "z": ("f", 0, 4),
    "xError": ("e", 0, 0.002),
    "yError": ("e", 0, 0.002),
    "zError": ("e", 0, 0.005),
    "tracksSize": ("i", 2, 80),
    "chi2": ("e", 0, 30),
    "ndof": ("e", 1, 30),
    "isValidVtx": ("b", 0.99, 0),
}


def _trigger_bits(rng, n: int) -> dict:
    """650 HLT and 450 L1 bits, each firing with its own rate (most rarely, a few often)."""
    out = {}
    rates = np.concatenate([rng.uniform(0.3, 1.0, 20), 10 ** rng.uniform(-4, -0.5, N_HLT + N_L1 - 20)])
    for i, r in enumerate(rates):
        name = f"HLT_Path{i:03d}_v1" if i < N_HLT else f"L1_Seed{i - N_HLT:03d}"
        out[name] = rng.random(n) < r
    out["DST_PFScouting_JetHT_v1"] = np.ones(n, bool)
    return out


def scouting_columns(arrays: ak.Array, rng, ht_triggered: float | None) -> dict:
    """The columns of one cluster for uproot's ``extend``: the input's branches (jagged ones as
    collections) and the added ScoutingNano collections and bits."""
    n = len(arrays)
    cols: dict = {}
    prefixes = sorted({k.split("_", 1)[0] for k in arrays.fields if arrays[k].ndim > 1 and "_" in k})
    for k in arrays.fields:
        if arrays[k].ndim > 1:
            if "_" not in k:  # a NanoAOD vector branch (nPSWeight + PSWeight)
                cols[k] = arrays[k]
            continue
        if k[:1] == "n" and (k[1:] in prefixes or k[1:] in arrays.fields):
            continue
        cols[k] = ak.to_numpy(arrays[k])
    for p in prefixes:
        cols[p] = {k.split("_", 1)[1]: arrays[k] for k in arrays.fields if k.startswith(p + "_")}
    pf_name = "ScoutingPFCandidate" if "ScoutingPFCandidate" in prefixes else "ScoutingParticle"
    pf = cols[pf_name]
    extra = _pf_extra(rng, pf["pt"], pf["eta"], pf["phi"], pf["charge"])
    if pf_name == "ScoutingParticle":  # the older layout: the track fields on the candidates themselves
        cols[pf_name] = ak.zip({**pf, **extra})
    else:  # Run-3: ScoutingParticle is the track view (kinematics, pdgId, vertex, track fields; no mass/charge)
        cols["ScoutingParticle"] = ak.zip({"pt": pf["pt"], "eta": pf["eta"], "phi": pf["phi"], "pdgId": pf["pdgId"],
                                           **extra})
    for p in prefixes:  # the collections not zipped above
        if isinstance(cols[p], dict):
            cols[p] = ak.zip(cols[p])
    pf_rec = ak.zip({k: pf[k] for k in ("pt", "eta", "phi", "mass")})
    if ht_triggered is not None:
        keep = rng.random(n) < ht_triggered
        low = (25.0 * np.sqrt(-2 * np.log(rng.random(n)))).astype(np.float32)
        cols["ScoutingMET_pt"] = np.where(keep, cols["ScoutingMET_pt"], low).astype(np.float32)
    cols["bunchCrossing"] = rng.integers(1, 3565, n).astype(np.uint32)
    if "ScoutingRho_fixedGridRhoFastjetAll" not in cols:  # the generator's Run-3 layout has its own
        cols["ScoutingRho_fixedGridRhoFastjetAll"] = reduce_mantissa(rng.normal(25, 5, n).astype(np.float32))
    cols["ScoutingPFJet"] = _pf_jets(rng, pf_rec)
    if "ScoutingPrimaryVertex" not in cols:
        n_pu = ak.to_numpy(arrays["Pileup_nPU"]) if "Pileup_nPU" in arrays.fields else rng.poisson(35, n)
        cols["ScoutingPrimaryVertex"] = _objects(rng, np.asarray(n_pu) + 1, VERTEX)
    n_charged = ak.to_numpy(ak.sum(pf["charge"] != 0, axis=1))
    cols["ScoutingTrack"] = _objects(rng, rng.binomial(n_charged, 0.25), TRACK)
    cols["ScoutingMuon"] = _objects(rng, rng.poisson(0.15, n), MUON)
    cols["ScoutingElectron"] = _objects(rng, rng.poisson(0.2, n), ELECTRON)
    cols["ScoutingPhoton"] = _objects(rng, rng.poisson(0.6, n), PHOTON)
    cols.update(_trigger_bits(rng, n))
    return cols


def _types(cols: dict) -> dict:
    out = {}
    for k, v in cols.items():
        out[k] = v.type.content if isinstance(v, ak.Array) else v.dtype
    return out


def _compressed_per_event(cols: dict, n: int, compression) -> float:
    """Compressed bytes per event of these columns (one basket each), by writing them to memory."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cms_like_probe_") as tmp:
        path = Path(tmp) / "probe.root"
        with uproot.recreate(path, compression=compression) as g:
            g.mktree("Events", _types(cols)).extend(cols)
        return path.stat().st_size / n


def rewrite(
    src: str,
    dst: str,
    repeat: int = 1,
    ht_triggered: float | None = None,
    compression: str = "LZMA:9",
    cluster_mb: float = 10.0,
    cluster_events: int | None = None,
    seed: int = 1,
    entry_stop: int | None = None,
) -> dict:
    """Write ``dst``: the events of ``src`` (the first ``entry_stop``, ``repeat`` times) with the ScoutingNano
    collections added; returns what was written (events, branches, clusters, sizes, seconds)."""
    comp = compression_of(compression)
    rng = np.random.default_rng(seed)
    with uproot.open(src) as f:
        events = f["Events"].arrays(library="ak", entry_stop=entry_stop)
        runs = f["Runs"].arrays(library="ak") if "Runs" in f else None
        meta = json.loads(str(f["svjscout_meta"])) if "svjscout_meta" in f else {}
    if repeat > 1:
        parts = []
        for k in range(repeat):
            part = ak.with_field(events, events["event"] + np.uint64(k * 10_000_000), "event")
            parts.append(part)
        events = ak.concatenate(parts)
    n_total = len(events)
    if cluster_events is None:
        probe = min(200, n_total)
        per_event = _compressed_per_event(
            scouting_columns(events[:probe], np.random.default_rng(seed + 1), ht_triggered), probe, comp
        )
        cluster_events = max(1, int(cluster_mb * 1e6 / per_event))
    t = time.perf_counter()
    with uproot.recreate(dst, compression=comp) as g:
        tree = None
        for start in range(0, n_total, cluster_events):
            cols = scouting_columns(events[start : start + cluster_events], rng, ht_triggered)
            if tree is None:
                tree = g.mktree("Events", _types(cols))
            tree.extend(cols)
        if runs is not None:
            rcols = {
                k: (runs[k] if runs[k].ndim > 1 else ak.to_numpy(runs[k]))
                for k in runs.fields
                if not (k[:1] == "n" and k[1:] in runs.fields)
            }
            g.mktree("Runs", _types(rcols)).extend(rcols)
        if meta:
            meta["cms_like"] = {
                "source": str(src),
                "repeat": repeat,
                "ht_triggered": ht_triggered,
                "compression": compression,
                "cluster_events": cluster_events,
            }
            g["svjscout_meta"] = json.dumps(meta, sort_keys=True)
    with uproot.open(dst) as f:
        tree = f["Events"]
        info = {
            "events": int(tree.num_entries),
            "branches": len(tree.branches),
            "cluster_events": cluster_events,
            "clusters": len(tree.common_entry_offsets()) - 1,
            "MB": Path(dst).stat().st_size / 1e6,
            "uncompressed_MB": tree.uncompressed_bytes / 1e6,
            "write_s": time.perf_counter() - t,
        }
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--sample", default="embedded", help="'embedded' or a directory of .root files")
    ap.add_argument("--only", default=None, help="comma-separated file stems to rewrite (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="write every event K times (event numbers made unique)")
    ap.add_argument(
        "--ht-triggered",
        type=float,
        default=None,
        metavar="F",
        help="keep the MET of a fraction F of the events, resolution MET for the others",
    )
    ap.add_argument("--compression", default="LZMA:9")
    ap.add_argument("--cluster-mb", type=float, default=10.0, help="compressed MB per cluster (NanoAOD: 10)")
    ap.add_argument("--cluster-events", type=int, default=None, help="events per cluster (overrides --cluster-mb)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    src_dir = EMBEDDED if args.sample == "embedded" else Path(args.sample)
    files = sorted(src_dir.glob("*.root"))
    if args.only:
        keep = set(args.only.split(","))
        files = [f for f in files if f.stem in keep]
    if not files:
        sys.exit(f"no input .root files in {src_dir}")
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    head = f"{'file':<26}{'events':>8}{'branches':>10}{'clusters':>10}{'ev/cluster':>12}"
    print(head + f"{'MB':>8}{'MB unc.':>9}{'write s':>9}")
    for i, f in enumerate(files):
        info = rewrite(
            str(f),
            str(out / f.name),
            args.repeat,
            args.ht_triggered,
            args.compression,
            args.cluster_mb,
            args.cluster_events,
            args.seed + i,
        )
        print(
            f"{f.name:<26}{info['events']:>8,}{info['branches']:>10,}{info['clusters']:>10}{info['cluster_events']:>12,}"
            f"{info['MB']:>8.1f}{info['uncompressed_MB']:>9.1f}{info['write_s']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
