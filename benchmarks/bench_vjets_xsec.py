"""What the W/Z K factors multiply: Pythia's LO V + jet cross section above pT-hat 200 GeV and
its scale uncertainty (issue 30 item 4).

``samples/processes.py`` normalises W(-> l nu) + jet and Z(-> nu nu) + jet (Pythia 2 -> 2,
``WeakBosonAndParton``, pT-hat > 200 GeV) to Pythia's ``sigmaGen`` times K = 1.21 / 1.23. This
prints, per process, Pythia's LO cross section with the settings of the samples (CP5, NNPDF3.1
NNLO, alpha_s(m_Z) = 0.118 at two loops) and its 7-point renormalisation / factorisation scale
variation (mu_R and mu_F times {0.5, 1, 2}, their ratio between 1/2 and 2; Pythia's
``SigmaProcess:renormMultFac`` and ``factorMultFac`` multiply the squared scales, so they are set
to the squares), the envelope of the variations relative to the nominal, and where K sits in it.
The hard process alone is generated (``PartonLevel:all = off``): the cross section is a property
of the hard process (the shower, hadronisation and decays do not change it), so a few thousand
events give it to ~1 %.

Usage: python benchmarks/bench_vjets_xsec.py [--events 20000] [--pthat-min 200]
"""

from __future__ import annotations

import argparse
import itertools

from svjscout.samples.processes import K_FACTORS, process_settings

PB_PER_MB = 1e9
SCALES = [(r, f) for r, f in itertools.product((0.5, 1.0, 2.0), repeat=2) if max(r, f) / min(r, f) <= 2.0]


def sigma_lo(process: str, pthat_min: float, mur: float, muf: float, events: int,
             seed: int = 11) -> tuple[float, float]:
    """Pythia's sigmaGen (pb) and its error for ``process`` with the scales multiplied by mur, muf."""
    import pythia8mc  # generate extra

    p = pythia8mc.Pythia("", False)
    lines = process_settings(process, pthat_min=pthat_min) + [
        "PartonLevel:all = off", "HadronLevel:all = off", "UncertaintyBands:doVariations = off",
        # Pythia's factors multiply the squared scales (Q^2): mu x 2 is a factor 4
        f"SigmaProcess:renormMultFac = {mur**2}", f"SigmaProcess:factorMultFac = {muf**2}", f"Random:seed = {seed}"]
    for line in lines:
        if not p.readString(line):
            raise RuntimeError(f"Pythia rejected {line!r}")
    if not p.init():
        raise RuntimeError("Pythia initialisation failed")
    p.nextBatch(events)
    info = p.infoPython()
    return info.sigmaGen() * PB_PER_MB, info.sigmaErr() * PB_PER_MB


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--pthat-min", type=float, default=200.0)
    args = ap.parse_args(argv)
    print(f"Pythia 8 LO, pT-hat > {args.pthat_min:g} GeV, {args.events} hard-process events per point")
    print("| process | muR x | muF x | sigma LO [pb] | / nominal |")
    print("|---|---|---|---|---|")
    for process in ("wjets", "zjets"):
        res = {s: sigma_lo(process, args.pthat_min, *s, args.events) for s in SCALES}
        nom = res[(1.0, 1.0)][0]
        for (r, f), (s, e) in res.items():
            print(f"| {process} | {r:g} | {f:g} | {s:.4g} +- {e:.2g} | {s / nom:.3f} |")
        lo, hi = min(v[0] for v in res.values()) / nom, max(v[0] for v in res.values()) / nom
        k = K_FACTORS[process][0]
        print(f"| {process} | envelope | | {nom:.4g} | {lo:.3f} - {hi:.3f}; K = {k:g}: "
              f"sigma x K = {nom * k:.4g} pb |")


if __name__ == "__main__":
    main()
