"""Write the ILLUSTRATIVE correctionlib payload shipped with the package.

    python -m svjscout.processors.corrections.make_payloads [OUTPUT]

writes ``illustrative_run2.json.gz`` beside this file (or OUTPUT) with correctionlib's own schema
tools (:mod:`correctionlib.schemav2` pydantic models, one ``CorrectionSet``). Running it again
writes the same bytes (no time stamp in the gzip header, JSON keys in schema order, pileup values
rounded to 10 significant digits); ``tests/test_corrections.py`` checks that.

NONE OF THESE NUMBERS IS A CMS MEASUREMENT. They are of the order of magnitude of the public CMS
Run-2 jet energy scale and resolution, pileup and trigger figures (docs/corrections.md says which,
and how to use a real CMS payload instead: one line of the job config).

The five corrections (names and inputs are the interface of :mod:`svjscout.processors.corrections`):

* ``jes_uncertainty(eta, pt)``: relative JES uncertainty u, 0.010 to 0.064;
* ``jer_scale_factor(eta, systematic)``: data/MC resolution scale factor s, 1.10 to 1.30;
* ``jer_resolution(eta, pt, rho)``: relative MC resolution sqrt(N^2/pt^2 + S^2/pt + C^2);
* ``trigger_ht_sf(ht, systematic)``: the H_T turn-on scale factor, 0.95 at 410 GeV to 1.0;
* ``pileup_weight(nTrueInt, systematic)``: target/MC pileup profile ratio, min-bias xsec +-4.6 %.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
from pathlib import Path

import correctionlib.schemav2 as cs
import numpy as np

#: Name of the shipped payload (``shipped:illustrative_run2`` in the job config).
NAME = "illustrative_run2"
OUTPUT = Path(__file__).resolve().parent / f"{NAME}.json.gz"

ILLUSTRATIVE = ("ILLUSTRATIVE values of the order of magnitude of public CMS Run-2 figures, not a "
                "CMS measurement (svjscout docs/corrections.md)")

SYSTEMATICS = ("nom", "up", "down")


def _mirror(abs_edges: list[float]) -> list[float]:
    """Signed-eta edges from |eta| edges [0, a, b, ..., max]: [-max, ..., -a, 0, a, ..., max]."""
    pos = [float(e) for e in abs_edges]
    return [-e for e in reversed(pos[1:])] + pos


def _mirror_content(per_abs_bin: list) -> list:
    """Contents of the mirrored bins from the contents of the |eta| bins."""
    return list(reversed(per_abs_bin)) + list(per_abs_bin)


# ---------------------------------------------------------------- JES
#: |eta| bins of the JES uncertainty and its multiplier per bin (larger forward).
JES_ABS_ETA = [0.0, 1.3, 2.5, 3.0, 5.0]
JES_ETA_MULT = [1.0, 1.25, 1.5, 1.6]
#: pT bins (GeV) and the central (|eta| < 1.3) uncertainty per bin (larger at low pT).
JES_PT = [15.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 7000.0]
JES_PT_U = [0.040, 0.028, 0.020, 0.015, 0.012, 0.011, 0.010]


def jes_table() -> tuple[list[float], list[float], list[list[float]]]:
    """(eta edges, pt edges, u[eta bin][pt bin]) of ``jes_uncertainty`` (values rounded to 1e-4)."""
    eta_edges = _mirror(JES_ABS_ETA)
    rows = _mirror_content([[round(m * u, 4) for u in JES_PT_U] for m in JES_ETA_MULT])
    return eta_edges, list(JES_PT), rows


def jes_uncertainty() -> cs.Correction:
    eta_edges, pt_edges, rows = jes_table()
    return cs.Correction(
        name="jes_uncertainty",
        description=("Relative jet energy scale uncertainty u (total, one nuisance); a jet is scaled "
                     "by 1 +- u. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name="eta", type="real", description="jet pseudorapidity"),
                cs.Variable(name="pt", type="real", description="jet pT (GeV)")],
        output=cs.Variable(name="u", type="real", description="relative uncertainty"),
        data=cs.MultiBinning(nodetype="multibinning", inputs=["eta", "pt"], edges=[eta_edges, pt_edges],
                             content=[u for row in rows for u in row], flow="clamp"),
    )


# ---------------------------------------------------------------- JER
#: |eta| bins of the JER scale factor, nominal and uncertainty per bin.
JER_SF_ABS_ETA = [0.0, 0.5, 1.1, 1.7, 2.3, 2.8, 3.2, 5.0]
JER_SF_NOM = [1.10, 1.11, 1.12, 1.13, 1.18, 1.30, 1.15]
JER_SF_UNC = [0.03, 0.03, 0.04, 0.05, 0.08, 0.12, 0.10]


def jer_sf_table(systematic: str) -> list[float]:
    """Scale factor per |eta| bin of :data:`JER_SF_ABS_ETA` for ``nom``/``up``/``down``."""
    sign = {"nom": 0, "up": 1, "down": -1}[systematic]
    return [round(n + sign * u, 4) for n, u in zip(JER_SF_NOM, JER_SF_UNC)]


def jer_scale_factor() -> cs.Correction:
    edges = _mirror(JER_SF_ABS_ETA)
    return cs.Correction(
        name="jer_scale_factor",
        description=("Data/MC jet pT resolution scale factor s (stochastic smearing widens the MC "
                     "resolution by sqrt(s^2 - 1)). " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name="eta", type="real", description="jet pseudorapidity"),
                cs.Variable(name="systematic", type="string", description="nom, up or down")],
        output=cs.Variable(name="s", type="real", description="resolution scale factor"),
        data=cs.Category(nodetype="category", input="systematic", content=[
            cs.CategoryItem(key=syst, value=cs.Binning(nodetype="binning", input="eta", edges=edges,
                                                       content=_mirror_content(jer_sf_table(syst)),
                                                       flow="clamp"))
            for syst in SYSTEMATICS]),
    )


#: |eta| bins of the MC resolution and the (N [GeV], S [GeV^0.5], C) parameters per bin.
JER_RES_ABS_ETA = [0.0, 1.3, 2.5, 3.0, 5.0]
JER_RES_NSC = [(2.0, 0.70, 0.040), (3.0, 0.80, 0.045), (4.5, 0.90, 0.050), (4.0, 0.60, 0.080)]
#: pT below which the formula is evaluated at this value (GeV): no division by a vanishing pT.
JER_RES_PT_MIN = 10.0
JER_RES_FORMULA = ("sqrt([0]*[0]/(max(x,{m})*max(x,{m}))+[1]*[1]/max(x,{m})+[2]*[2])"
                   .format(m=f"{JER_RES_PT_MIN:.1f}"))


def jer_resolution_value(abs_eta_bin: int, pt: float) -> float:
    """The formula of ``jer_resolution`` in plain Python (for checks)."""
    n, s, c = JER_RES_NSC[abs_eta_bin]
    x = max(pt, JER_RES_PT_MIN)
    return math.sqrt(n * n / (x * x) + s * s / x + c * c)


def jer_resolution() -> cs.Correction:
    edges = _mirror(JER_RES_ABS_ETA)
    formulas = [cs.Formula(nodetype="formula", expression=JER_RES_FORMULA, parser="TFormula",
                           variables=["pt"], parameters=[float(p) for p in nsc])
                for nsc in JER_RES_NSC]
    return cs.Correction(
        name="jer_resolution",
        description=("Relative MC jet pT resolution sigma(pT)/pT = sqrt(N^2/pT^2 + S^2/pT + C^2) "
                     f"(pT below {JER_RES_PT_MIN} GeV evaluated at {JER_RES_PT_MIN} GeV); rho is "
                     "accepted for the CMS interface and unused. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name="eta", type="real", description="jet pseudorapidity"),
                cs.Variable(name="pt", type="real", description="jet pT (GeV)"),
                cs.Variable(name="rho", type="real", description="pileup energy density (unused; pass 0)")],
        output=cs.Variable(name="sigma", type="real", description="relative resolution"),
        data=cs.Binning(nodetype="binning", input="eta", edges=edges, content=_mirror_content(formulas),
                        flow="clamp"),
    )


# ---------------------------------------------------------------- trigger
#: H_T bins (GeV) of the trigger scale factor, nominal and uncertainty per bin; below 410 GeV
#: (the offline H_T threshold) the first bin applies, above 14 TeV the last (clamp).
TRIG_HT = [410.0, 420.0, 430.0, 450.0, 475.0, 500.0, 550.0, 600.0, 14000.0]
TRIG_NOM = [0.950, 0.960, 0.970, 0.980, 0.990, 0.995, 1.000, 1.000]
TRIG_UNC = [0.040, 0.030, 0.025, 0.020, 0.015, 0.010, 0.005, 0.005]


def trigger_table(systematic: str) -> list[float]:
    sign = {"nom": 0, "up": 1, "down": -1}[systematic]
    return [round(n + sign * u, 4) for n, u in zip(TRIG_NOM, TRIG_UNC)]


def trigger_ht_sf() -> cs.Correction:
    return cs.Correction(
        name="trigger_ht_sf",
        description=("Data/MC scale factor of the scouting H_T trigger turn-on (offline H_T > 410 GeV); "
                     "the uncertainty is largest near the threshold. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name="ht", type="real", description="offline AK4 H_T (GeV)"),
                cs.Variable(name="systematic", type="string", description="nom, up or down")],
        output=cs.Variable(name="sf", type="real", description="trigger scale factor"),
        data=cs.Category(nodetype="category", input="systematic", content=[
            cs.CategoryItem(key=syst, value=cs.Binning(nodetype="binning", input="ht", edges=list(TRIG_HT),
                                                       content=trigger_table(syst), flow="clamp"))
            for syst in SYSTEMATICS]),
    )


# ---------------------------------------------------------------- pileup
#: nTrueInt histogram: 100 unit bins in [0, 100).
PU_EDGES = np.arange(0.0, 101.0)
#: Poisson mixtures (mean, fraction) of the MC profile and of the target (data) profile.
PU_MC_MIX = [(20.0, 0.30), (32.0, 0.40), (48.0, 0.25), (62.0, 0.05)]
PU_DATA_MIX = [(22.0, 0.25), (34.0, 0.50), (50.0, 0.25)]
#: Relative uncertainty of the min-bias cross section: the target means move by +-4.6 %.
PU_XSEC_UNC = 0.046
#: An MC bin with a probability below this is empty (fewer than one event in 10^7): weight 0.
PU_MC_EMPTY = 1e-7
#: Significant digits kept in the payload (the same bytes whatever the platform's libm).
PU_DIGITS = 10


def _poisson_mixture(mix: list[tuple[float, float]], scale: float = 1.0) -> np.ndarray:
    """Normalised histogram in :data:`PU_EDGES` of a mixture of Poisson distributions."""
    n = PU_EDGES[:-1]
    lgam = np.array([math.lgamma(k + 1.0) for k in n])
    p = np.zeros(len(n))
    for mean, frac in mix:
        mu = mean * scale
        p += frac * np.exp(n * math.log(mu) - mu - lgam)
    return p / p.sum()


def pileup_profiles() -> dict[str, np.ndarray]:
    """The illustrative profiles: ``mc`` and the target ``nom``/``up``/``down`` (each normalised)."""
    return {"mc": _poisson_mixture(PU_MC_MIX),
            "nom": _poisson_mixture(PU_DATA_MIX),
            "up": _poisson_mixture(PU_DATA_MIX, 1.0 + PU_XSEC_UNC),
            "down": _poisson_mixture(PU_DATA_MIX, 1.0 - PU_XSEC_UNC)}


def _round(x: float, digits: int = PU_DIGITS) -> float:
    return float(f"{x:.{digits - 1}e}")


def pileup_table(systematic: str) -> list[float]:
    """Weights per nTrueInt bin: target/MC, 0 where the MC is empty, normalised so that
    sum_n P_MC(n) w(n) = 1 (the MC's mean weight is one); rounded to :data:`PU_DIGITS` digits."""
    prof = pileup_profiles()
    mc, target = prof["mc"], prof[systematic]
    filled = mc >= PU_MC_EMPTY
    ratio = np.where(filled, target / np.where(filled, mc, 1.0), 0.0)
    ratio /= np.sum(mc * ratio)
    return [_round(w) for w in ratio]


def pileup_weight() -> cs.Correction:
    return cs.Correction(
        name="pileup_weight",
        description=("Pileup weight: ratio of the target (data) profile of the true number of "
                     "interactions to the MC profile, normalised to a mean of one over the MC; up/down "
                     f"from the min-bias cross section +-{100 * PU_XSEC_UNC:.1f} %; 0 where the MC "
                     "profile is empty. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name="nTrueInt", type="real", description="true number of pileup interactions"),
                cs.Variable(name="systematic", type="string", description="nom, up or down")],
        output=cs.Variable(name="weight", type="real", description="event weight"),
        data=cs.Category(nodetype="category", input="systematic", content=[
            cs.CategoryItem(key=syst, value=cs.Binning(nodetype="binning", input="nTrueInt",
                                                       edges=[float(e) for e in PU_EDGES],
                                                       content=pileup_table(syst), flow="clamp"))
            for syst in SYSTEMATICS]),
    )


# ---------------------------------------------------------------- the set
def correction_set() -> cs.CorrectionSet:
    """The illustrative ``CorrectionSet`` (pydantic model)."""
    return cs.CorrectionSet(
        schema_version=2,
        description=(f"svjscout {NAME}: " + ILLUSTRATIVE + ". Written by "
                     "python -m svjscout.processors.corrections.make_payloads."),
        corrections=[jes_uncertainty(), jer_scale_factor(), jer_resolution(), trigger_ht_sf(),
                     pileup_weight()],
    )


def payload_json() -> bytes:
    """The payload's JSON text (UTF-8), deterministic."""
    data = correction_set().model_dump(mode="json", exclude_unset=True)
    return (json.dumps(data, indent=1) + "\n").encode()


def payload_gz() -> bytes:
    """The gzip file's bytes (no file name and time 0 in the header: reproducible)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="", mtime=0, compresslevel=9) as f:
        f.write(payload_json())
    return buf.getvalue()


def write(path: str | Path = OUTPUT) -> Path:
    """Write the payload (gzip when the name ends in ``.gz``, plain JSON otherwise)."""
    path = Path(path)
    path.write_bytes(payload_gz() if path.suffix == ".gz" else payload_json())
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = write(argv[0] if argv else OUTPUT)
    print(f"wrote {out} (illustrative, not CMS)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
