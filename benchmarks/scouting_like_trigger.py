"""Scouting trigger on generated files: keep the events with reconstructed AK4 H_T > ht_min.

Real scouting data are H_T-triggered at the HLT and nothing else. ``svjscout generate`` can only
pre-filter on the generator-level scalar sum of visible pT, which is far looser than the AK4-jet
H_T (it counts every soft particle), so this step applies the trigger emulation itself, with the
processor's own candidate cleaning, AK4 clustering and H_T (processors/jets.py, default cuts):

    python benchmarks/scouting_like_trigger.py IN.root OUT.root [--ht-min 410] [--compression LZMA:6]

The ``Runs`` tree (sum of generator weights of every generated event) and ``svjscout_meta``
(cross section) are copied, so the output is normalised like the input; the metadata records
the trigger and the number of events kept. Run by samples/scouting_like/make.sh; a script beside
the benchmarks it serves, not part of the package (it uses the processors, above the samples layer).
"""

from __future__ import annotations

import argparse

import awkward as ak
import numpy as np

from svjscout.core.cuts import Cuts
from svjscout.processors.jets import cluster, ht
from svjscout.samples.layouts import chs_mask, pf_collection_of
from svjscout.samples.skim import write_subset


def trigger_mask(arrays, ht_min: float, cuts=None) -> np.ndarray:
    """AK4 H_T > ht_min per event, computed as in SVJProcessor.process."""
    cuts = cuts or Cuts()
    name = pf_collection_of(arrays.fields)
    keep = chs_mask(arrays, name)  # CHS, as the processor
    pf = ak.zip({k: arrays[f"{name}_{k}"][keep] for k in ("pt", "eta", "phi", "mass")})
    finite = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
    jets = cluster(pf[finite], 0.4, ptmin=cuts.ak4_pt_min)
    return ht(jets, cuts.ak4_pt_min, cuts.ak4_abs_eta_max) > ht_min


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--ht-min", type=float, default=410.0)
    ap.add_argument("--compression", default="LZMA:6", help="of the output (default: as samples/generate.py)")
    ap.add_argument("--step", type=int, default=20000, help="events read at a time")
    args = ap.parse_args()
    write_subset(args.inp, args.out, lambda arrays: trigger_mask(arrays, args.ht_min),
                 {"trigger": f"AK4 H_T > {args.ht_min:g} GeV (benchmarks/scouting_like_trigger.py)"},
                 compression=args.compression, step=args.step)


if __name__ == "__main__":
    main()
