"""Scouting trigger on generated files: keep the events with reconstructed AK4 H_T > ht_min.

Real scouting data are H_T-triggered at the HLT and nothing else. ``svjscout generate`` can only
pre-filter on the generator-level scalar sum of visible pT, which is far looser than the AK4-jet
H_T (it counts every soft particle), so this step applies the trigger emulation itself, with the
processor's own candidate cleaning, AK4 clustering and H_T (processors/jets.py, default cuts):

    python samples/scouting_like/trigger.py IN.root OUT.root [--ht-min 410] [--compression LZMA:6]

The ``Runs`` tree (sum of generator weights of every generated event) and ``svjscout_meta``
(cross section) are copied, so the output is normalised like the input; the metadata records
the trigger and the number of events kept.
"""

from __future__ import annotations

import argparse
import json

import awkward as ak
import numpy as np
import uproot


def trigger_mask(arrays, ht_min: float, cuts=None) -> np.ndarray:
    """AK4 H_T > ht_min per event, computed as in SVJProcessor.process."""
    from svjscout.processors.jets import cluster, ht
    from svjscout.processors.selection import Cuts

    cuts = cuts or Cuts()
    pf = ak.zip({k: arrays[f"ScoutingParticle_{k}"] for k in ("pt", "eta", "phi", "mass")})
    finite = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
    jets = cluster(pf[finite], 0.4, ptmin=cuts.ak4_pt_min)
    return ht(jets, cuts.ak4_pt_min, cuts.ak4_abs_eta_max) > ht_min


def _columns(arrays) -> dict:
    """Flat branches -> uproot columns: jagged ones (e.g. PSWeight) as awkward, their counters
    (nPSWeight) left for uproot to write, the rest as numpy."""
    jagged = {k for k in arrays.fields if arrays[k].ndim > 1}
    return {k: arrays[k] if k in jagged else ak.to_numpy(arrays[k]) for k in arrays.fields
            if not (k[:1] == "n" and k[1:] in jagged)}


def compression_of(spec: str):
    """``LZMA:6``, ``ZSTD:5``, ``LZ4:4``, ``ZLIB:1`` -> an uproot compression object."""
    name, _, level = spec.partition(":")
    return getattr(uproot, name.upper())(int(level or 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--ht-min", type=float, default=410.0)
    ap.add_argument("--compression", default="LZMA:6", help="of the output (default: as samples/generate.py)")
    ap.add_argument("--step", type=int, default=20000, help="events read at a time")
    args = ap.parse_args()
    with uproot.open(args.inp) as f:
        tree = f["Events"]
        runs = f["Runs"].arrays(library="ak")
        meta = json.loads(str(f["svjscout_meta"]))
        n_in, kept, tree_out = tree.num_entries, 0, None
        with uproot.recreate(args.out, compression=compression_of(args.compression)) as g:
            for arrays in tree.iterate(step_size=args.step, library="ak"):
                sel = arrays[trigger_mask(arrays, args.ht_min)]
                cols = _columns(sel[[k for k in sel.fields if not k.startswith(("ScoutingParticle_", "nScout"))]])
                cols["ScoutingParticle"] = ak.zip({k.split("_", 1)[1]: sel[k] for k in sel.fields
                                                   if k.startswith("ScoutingParticle_")})
                if tree_out is None:
                    types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
                    tree_out = g.mktree("Events", types)
                tree_out.extend(cols)
                kept += len(sel)
            runs_cols = _columns(runs)
            g.mktree("Runs", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                              for k, v in runs_cols.items()}).extend(runs_cols)
            meta.update({"trigger": f"AK4 H_T > {args.ht_min:g} GeV (samples/scouting_like/trigger.py)",
                         "n_before_trigger": int(n_in), "n_written": int(kept)})
            g["svjscout_meta"] = json.dumps(meta)
    print(f"{args.out}: {kept} of {n_in} events with AK4 H_T > {args.ht_min:g} GeV")


if __name__ == "__main__":
    main()
