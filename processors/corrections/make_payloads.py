"""Write the correction payloads in the CMS JSON POG layout (the shipped era and the test era).

    python -m svjscout.processors.corrections.make_payloads [ROOT [ERA]]

writes an era's files, ``POG/JME/<era>/jet_jerc.json.gz`` and ``fatJet_jerc.json.gz``,
``POG/LUM/<era>/puWeights.json.gz`` and ``POG/HLT/<era>/trigger_sf.json.gz``, under ROOT (default:
beside this file; ERA default ``svjscout_sim``, the shipped era; ``2018_UL`` writes the test
payload, which ships in ``tests/data/jsonpog``), with correctionlib's own schema tools
(:mod:`correctionlib.schemav2` pydantic models). Running it again writes the same bytes (no time
stamp in the gzip header, JSON keys in schema order, pileup values rounded to 10 significant
digits); ``tests/test_corrections.py`` checks that.

NONE OF THESE NUMBERS IS A CMS MEASUREMENT. The shipped era ``svjscout_sim`` carries the
ILLUSTRATIVE numbers (of the order of magnitude of the public CMS Run-2 jet energy scale and
resolution, pileup and trigger figures; docs/corrections.md says which) and an identity JEC (our
fast detector is calibrated); the test era ``2018_UL`` carries CMS's 2018 UL correction names with
made-up, non-trivial values.

The illustrative numbers (the former five-name payload, :func:`correction_set`):

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

from svjscout.processors.corrections.pog import ERAS

#: Name of the illustrative numbers (``shipped:illustrative_run2`` in a job config names the era
#: ``svjscout_sim`` whose files carry them).
NAME = "illustrative_run2"
#: Root of the shipped era files (``POG/<pog>/svjscout_sim/...`` beside this module).
OUTPUT_ROOT = Path(__file__).resolve().parent

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


def jes_uncertainty(name: str = "jes_uncertainty", inputs: tuple[str, str] = ("eta", "pt"),
                    scale: float = 1.0) -> cs.Correction:
    eta_edges, pt_edges, rows = jes_table()
    if scale != 1.0:
        rows = [[round(scale * u, 4) for u in row] for row in rows]
    return cs.Correction(
        name=name,
        description=("Relative jet energy scale uncertainty u (total, one nuisance); a jet is scaled "
                     "by 1 +- u. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name=inputs[0], type="real", description="jet pseudorapidity"),
                cs.Variable(name=inputs[1], type="real", description="jet pT (GeV)")],
        output=cs.Variable(name="u", type="real", description="relative uncertainty"),
        data=cs.MultiBinning(nodetype="multibinning", inputs=list(inputs), edges=[eta_edges, pt_edges],
                             content=[u for row in rows for u in row], flow="clamp"),
    )


# ---------------------------------------------------------------- JER
#: |eta| bins of the JER scale factor, nominal and uncertainty per bin.
JER_SF_ABS_ETA = [0.0, 0.5, 1.1, 1.7, 2.3, 2.8, 3.2, 5.0]
JER_SF_NOM = [1.10, 1.11, 1.12, 1.13, 1.18, 1.30, 1.15]
JER_SF_UNC = [0.03, 0.03, 0.04, 0.05, 0.08, 0.12, 0.10]


def jer_sf_table(systematic: str, shift: float = 0.0) -> list[float]:
    """Scale factor per |eta| bin of :data:`JER_SF_ABS_ETA` for ``nom``/``up``/``down``."""
    sign = {"nom": 0, "up": 1, "down": -1}[systematic]
    return [round(n + shift + sign * u, 4) for n, u in zip(JER_SF_NOM, JER_SF_UNC)]


def jer_scale_factor(name: str = "jer_scale_factor", inputs: tuple[str, str] = ("eta", "systematic"),
                     shift: float = 0.0) -> cs.Correction:
    edges = _mirror(JER_SF_ABS_ETA)
    return cs.Correction(
        name=name,
        description=("Data/MC jet pT resolution scale factor s (stochastic smearing widens the MC "
                     "resolution by sqrt(s^2 - 1)). " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name=inputs[0], type="real", description="jet pseudorapidity"),
                cs.Variable(name=inputs[1], type="string", description="nom, up or down")],
        output=cs.Variable(name="s", type="real", description="resolution scale factor"),
        data=cs.Category(nodetype="category", input=inputs[1], content=[
            cs.CategoryItem(key=syst, value=cs.Binning(nodetype="binning", input=inputs[0], edges=edges,
                                                       content=_mirror_content(jer_sf_table(syst, shift)),
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


def jer_resolution(name: str = "jer_resolution", inputs: tuple[str, str, str] = ("eta", "pt", "rho")) -> cs.Correction:
    edges = _mirror(JER_RES_ABS_ETA)
    formulas = [cs.Formula(nodetype="formula", expression=JER_RES_FORMULA, parser="TFormula",
                           variables=[inputs[1]], parameters=[float(p) for p in nsc])
                for nsc in JER_RES_NSC]
    return cs.Correction(
        name=name,
        description=("Relative MC jet pT resolution sigma(pT)/pT = sqrt(N^2/pT^2 + S^2/pT + C^2) "
                     f"(pT below {JER_RES_PT_MIN} GeV evaluated at {JER_RES_PT_MIN} GeV); rho is "
                     "accepted for the CMS interface and unused. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name=inputs[0], type="real", description="jet pseudorapidity"),
                cs.Variable(name=inputs[1], type="real", description="jet pT (GeV)"),
                cs.Variable(name=inputs[2], type="real", description="pileup energy density (unused; pass 0)")],
        output=cs.Variable(name="sigma", type="real", description="relative resolution"),
        data=cs.Binning(nodetype="binning", input=inputs[0], edges=edges, content=_mirror_content(formulas),
                        flow="clamp"),
    )


# ---------------------------------------------------------------- trigger
#: H_T bins (GeV) of the trigger scale factor, nominal and uncertainty per bin; below 410 GeV
#: (the offline H_T threshold) the first bin applies, above 14 TeV the last (clamp).
TRIG_HT = [410.0, 420.0, 430.0, 450.0, 475.0, 500.0, 550.0, 600.0, 14000.0]
TRIG_NOM = [0.950, 0.960, 0.970, 0.980, 0.990, 0.995, 1.000, 1.000]
TRIG_UNC = [0.040, 0.030, 0.025, 0.020, 0.015, 0.010, 0.005, 0.005]


def trigger_table(systematic: str, shift: float = 0.0) -> list[float]:
    sign = {"nom": 0, "up": 1, "down": -1}[systematic]
    return [round(min(n + shift, 1.0) + sign * u, 4) for n, u in zip(TRIG_NOM, TRIG_UNC)]


def trigger_ht_sf(name: str = "trigger_ht_sf", inputs: tuple[str, str] = ("ht", "systematic"),
                  shift: float = 0.0) -> cs.Correction:
    return cs.Correction(
        name=name,
        description=("Data/MC scale factor of the scouting H_T trigger turn-on (offline H_T > 410 GeV); "
                     "the uncertainty is largest near the threshold. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name=inputs[0], type="real", description="offline AK4 H_T (GeV)"),
                cs.Variable(name=inputs[1], type="string", description="nom, up or down")],
        output=cs.Variable(name="sf", type="real", description="trigger scale factor"),
        data=cs.Category(nodetype="category", input=inputs[1], content=[
            cs.CategoryItem(key=syst, value=cs.Binning(nodetype="binning", input=inputs[0], edges=list(TRIG_HT),
                                                       content=trigger_table(syst, shift), flow="clamp"))
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


def pileup_profiles(data_mix: list[tuple[float, float]] | None = None) -> dict[str, np.ndarray]:
    """The illustrative profiles: ``mc`` and the target ``nom``/``up``/``down`` (each normalised)."""
    data_mix = PU_DATA_MIX if data_mix is None else data_mix
    return {"mc": _poisson_mixture(PU_MC_MIX),
            "nom": _poisson_mixture(data_mix),
            "up": _poisson_mixture(data_mix, 1.0 + PU_XSEC_UNC),
            "down": _poisson_mixture(data_mix, 1.0 - PU_XSEC_UNC)}


def _round(x: float, digits: int = PU_DIGITS) -> float:
    return float(f"{x:.{digits - 1}e}")


def pileup_table(systematic: str, data_mix: list[tuple[float, float]] | None = None) -> list[float]:
    """Weights per nTrueInt bin: target/MC, 0 where the MC is empty, normalised so that
    sum_n P_MC(n) w(n) = 1 (the MC's mean weight is one); rounded to :data:`PU_DIGITS` digits."""
    prof = pileup_profiles(data_mix)
    mc, target = prof["mc"], prof[systematic]
    filled = mc >= PU_MC_EMPTY
    ratio = np.where(filled, target / np.where(filled, mc, 1.0), 0.0)
    ratio /= np.sum(mc * ratio)
    return [_round(w) for w in ratio]


def pileup_weight(name: str = "pileup_weight", inputs: tuple[str, str] = ("nTrueInt", "systematic"),
                  keys: tuple[str, str, str] = SYSTEMATICS, data_mix=None) -> cs.Correction:
    return cs.Correction(
        name=name,
        description=("Pileup weight: ratio of the target (data) profile of the true number of "
                     "interactions to the MC profile, normalised to a mean of one over the MC; up/down "
                     f"from the min-bias cross section +-{100 * PU_XSEC_UNC:.1f} %; 0 where the MC "
                     "profile is empty. " + ILLUSTRATIVE),
        version=1,
        inputs=[cs.Variable(name=inputs[0], type="real", description="true number of pileup interactions"),
                cs.Variable(name=inputs[1], type="string", description=f"{keys[0]}, {keys[1]} or {keys[2]}")],
        output=cs.Variable(name="weight", type="real", description="event weight"),
        data=cs.Category(nodetype="category", input=inputs[1], content=[
            cs.CategoryItem(key=key, value=cs.Binning(nodetype="binning", input=inputs[0],
                                                      edges=[float(e) for e in PU_EDGES],
                                                      content=pileup_table(syst, data_mix), flow="clamp"))
            for syst, key in zip(SYSTEMATICS, keys)]),
    )


# ---------------------------------------------------------------- the former five-name set
def correction_set() -> cs.CorrectionSet:
    """The illustrative numbers as one five-name ``CorrectionSet`` (the former payload layout, still
    read by :func:`svjscout.processors.corrections.load_corrections` from a file)."""
    return cs.CorrectionSet(
        schema_version=2,
        description=(f"svjscout {NAME}: " + ILLUSTRATIVE + ". Written by "
                     "python -m svjscout.processors.corrections.make_payloads."),
        corrections=[jes_uncertainty(), jer_scale_factor(), jer_resolution(), trigger_ht_sf(),
                     pileup_weight()],
    )


def payload_json(cset: cs.CorrectionSet | None = None) -> bytes:
    """A set's JSON text (UTF-8), deterministic (default: :func:`correction_set`)."""
    data = (cset or correction_set()).model_dump(mode="json", exclude_unset=True)
    return (json.dumps(data, indent=1) + "\n").encode()


def payload_gz(cset: cs.CorrectionSet | None = None) -> bytes:
    """The gzip file's bytes (no file name and time 0 in the header: reproducible)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="", mtime=0, compresslevel=9) as f:
        f.write(payload_json(cset))
    return buf.getvalue()


# ---------------------------------------------------------------- the CMS JSON POG layout
def _var(name: str, kind: str = "real") -> cs.Variable:
    desc = {"JetA": "jet area", "JetEta": "jet pseudorapidity", "JetPt": "jet pT (GeV) before this level",
            "Rho": "pileup energy density rho (GeV)", "run": "run number", "systematic": "nom, up or down"}
    return cs.Variable(name=name, type=kind, description=desc.get(name, name))


LEVEL_INPUTS = {"L1FastJet": ("JetA", "JetEta", "JetPt", "Rho"), "L2Relative": ("JetEta", "JetPt"),
                "L3Absolute": ("JetEta", "JetPt"), "L2L3Residual": ("JetEta", "JetPt")}


def _level(name: str, level: str, data) -> cs.Correction:
    return cs.Correction(name=name, version=1, description=f"{level} jet energy correction",
                         inputs=[_var(v) for v in LEVEL_INPUTS[level]],
                         output=cs.Variable(name="correction", type="real"), data=data)


def _compound(tag: str, algo: str) -> cs.CompoundCorrection:
    return cs.CompoundCorrection(
        name=f"{tag}_L1L2L3Res_{algo}", description=f"compound L1L2L3Res correction of {algo} (levels in order)",
        inputs=[_var(v) for v in LEVEL_INPUTS["L1FastJet"]], output=cs.Variable(name="correction", type="real"),
        inputs_update=["JetPt"], input_op="*", output_op="*",
        stack=[f"{tag}_{lvl}_{algo}" for lvl in LEVEL_INPUTS])


def _identity_jec(tag: str, algo: str) -> list[cs.Correction]:
    """The four levels of ``tag`` as the constant 1 (our calibrated simulation)."""
    return [_level(f"{tag}_{lvl}_{algo}", lvl, 1.0) for lvl in LEVEL_INPUTS]


#: |eta| bins of the test payload's JEC and its parameters (MADE-UP values, for tests only):
#: L1FastJet offset A (p0 + p1 rho) GeV; L2Relative p0 + p1 / sqrt(max(pT, 10)); the data residual
#: r0 + r1 log10(max(pT, 15)) per period (index k: r0 + 0.003 k).
TEST_JEC_ABS_ETA = [0.0, 1.3, 2.5, 3.0, 5.191]
TEST_L1 = [(-0.3, 0.95), (-0.2, 1.0), (0.1, 1.1), (0.3, 1.2)]
TEST_L1_EXPR = "max(0.0001,1-(y*([0]+[1]*z))/x)"  # x JetPt, y JetA, z Rho
TEST_L2 = [(1.02, 0.6), (1.04, 0.9), (1.08, 1.2), (1.05, 1.5)]
TEST_L2_EXPR = "[0]+[1]/sqrt(max(x,10.0))"
TEST_RES = [(1.010, -0.002), (1.020, -0.003), (1.035, -0.004), (1.050, -0.005)]
TEST_RES_EXPR = "[0]+[1]*log10(max(x,15.0))"
#: the test payload's resolution: N grows with rho (bins of rho), S and C as the illustrative ones
TEST_RHO_EDGES = [0.0, 10.0, 20.0, 30.0, 40.0, 80.0]
TEST_PU_DATA_MIX = [(24.0, 0.30), (36.0, 0.50), (52.0, 0.20)]


def _eta_formulas(expr: str, variables: list[str], params: list[tuple[float, ...]]) -> cs.Binning:
    content = [cs.Formula(nodetype="formula", expression=expr, parser="TFormula", variables=variables,
                          parameters=[float(p) for p in pars]) for pars in params]
    return cs.Binning(nodetype="binning", input="JetEta", edges=_mirror(TEST_JEC_ABS_ETA),
                      content=_mirror_content(content), flow="clamp")


def test_jec(tag: str, algo: str, period: int | None) -> list[cs.Correction]:
    """The test payload's four levels of ``tag`` (period None: MC, whose residual is 1)."""
    l1_scale = 1.0 if period is None else 1.02
    l1 = _eta_formulas(TEST_L1_EXPR, ["JetPt", "JetA", "Rho"], [(a, b * l1_scale) for a, b in TEST_L1])
    l2 = _eta_formulas(TEST_L2_EXPR, ["JetPt"], TEST_L2)
    res = 1.0 if period is None else _eta_formulas(TEST_RES_EXPR, ["JetPt"],
                                                   [(r0 + 0.003 * period, r1) for r0, r1 in TEST_RES])
    data = {"L1FastJet": l1, "L2Relative": l2, "L3Absolute": 1.0, "L2L3Residual": res}
    return [_level(f"{tag}_{lvl}_{algo}", lvl, data[lvl]) for lvl in LEVEL_INPUTS]


def test_resolution(name: str) -> cs.Correction:
    """PtResolution of the test payload: per |eta| and rho bin, N (GeV) = N_illustrative + 0.05 rho."""
    content = []
    for n, s, c in JER_RES_NSC:
        rho_nodes = [cs.Formula(nodetype="formula", expression=JER_RES_FORMULA,
                                parser="TFormula", variables=["JetPt"],
                                parameters=[float(n + 0.05 * 0.5 * (a + b)), float(s), float(c)])
                     for a, b in zip(TEST_RHO_EDGES[:-1], TEST_RHO_EDGES[1:])]
        content.append(cs.Binning(nodetype="binning", input="Rho", edges=TEST_RHO_EDGES, content=rho_nodes,
                                  flow="clamp"))
    return cs.Correction(name=name, version=1, description="relative MC jet pT resolution (TEST VALUES)",
                         inputs=[_var("JetEta"), _var("JetPt"), _var("Rho")],
                         output=cs.Variable(name="sigma", type="real"),
                         data=cs.Binning(nodetype="binning", input="JetEta", edges=_mirror(JER_RES_ABS_ETA),
                                         content=_mirror_content(content), flow="clamp"))


def _jerc_file(era: str, algo: str, with_jer: bool) -> cs.CorrectionSet:
    """``POG/JME/<era>/jet_jerc.json.gz`` (or fatJet_jerc) of the shipped or the test era."""
    spec = ERAS[era]
    test = era != "svjscout_sim"
    corrs: list[cs.Correction] = []
    data_tags = [t for _, _, t in spec.jec_data]
    for k, tag in enumerate([spec.jec_mc, *data_tags]):
        period = None if k == 0 else k - 1
        corrs += test_jec(tag, algo, period) if test else _identity_jec(tag, algo)
    corrs.append(jes_uncertainty(f"{spec.jec_mc}_{spec.uncertainty}_{algo}", ("JetEta", "JetPt"),
                                 scale=1.2 if test else 1.0))
    if with_jer:
        corrs.append(jer_scale_factor(f"{spec.jer}_ScaleFactor_{algo}", ("JetEta", "systematic"),
                                      shift=0.02 if test else 0.0))
        corrs.append(test_resolution(f"{spec.jer}_PtResolution_{algo}") if test
                     else jer_resolution(f"{spec.jer}_PtResolution_{algo}", ("JetEta", "JetPt", "Rho")))
    what = "TEST VALUES (made up, for svjscout's tests), in the layout of CMS's jet_jerc" if test else ILLUSTRATIVE
    return cs.CorrectionSet(schema_version=2, description=f"svjscout {era} {algo}: {what}", corrections=corrs,
                            compound_corrections=[_compound(t, algo) for t in [spec.jec_mc, *data_tags]])


def pog_files(era: str) -> dict[str, cs.CorrectionSet]:
    """The files of an era in the CMS JSON POG layout: relative path -> ``CorrectionSet``.

    ``svjscout_sim``: the shipped era (identity JEC, the illustrative numbers); ``2018_UL``: the
    test payload (CMS's 2018 UL names, made-up values; ``tests/data/jsonpog``)."""
    spec = ERAS[era]
    test = era != "svjscout_sim"
    files = spec.files()
    out = {files["ak4"]: _jerc_file(era, spec.ak4, with_jer=True),
           files["ak8"]: _jerc_file(era, spec.ak8, with_jer=spec.jer_ak8 == spec.ak8)}
    what = "TEST VALUES (made up)" if test else ILLUSTRATIVE
    out[files["pileup"]] = cs.CorrectionSet(
        schema_version=2, description=f"svjscout {era} pileup weights: {what}",
        corrections=[pileup_weight(spec.pileup, ("NumTrueInteractions", "weights"), ("nominal", "up", "down"),
                                   data_mix=TEST_PU_DATA_MIX if test else None)])
    out[files["trigger"]] = cs.CorrectionSet(
        schema_version=2, description=f"svjscout {era} scouting H_T trigger scale factor: {what}",
        corrections=[trigger_ht_sf(spec.trigger, ("HT", "systematic"), shift=-0.01 if test else 0.0)])
    return out


#: Where :func:`write` puts each era's files: the shipped era beside this module, the test era in
#: the tests' data folder (relative to the repository).
TEST_ROOT = Path(__file__).resolve().parents[2] / "tests" / "data" / "jsonpog"


def write(root: str | Path = OUTPUT_ROOT, era: str = "svjscout_sim") -> list[Path]:
    """Write an era's files under ``root`` (``POG/<pog>/<era>/...``), reproducibly gzipped."""
    out = []
    for rel, cset in pog_files(era).items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload_gz(cset))
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    """``make_payloads [ROOT [ERA]]``: write an era's files (default: the shipped svjscout_sim)."""
    argv = sys.argv[1:] if argv is None else argv
    root = argv[0] if argv else OUTPUT_ROOT
    era = argv[1] if len(argv) > 1 else "svjscout_sim"
    for path in write(root, era):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
