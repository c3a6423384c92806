"""The signal benchmark's dark-hadron decays and cross sections against their references.

References, independent of the code under test: SVJProduction's mass-insertion branching fractions
at m_dark = 20 GeV (b bbar 94.3 %, c cbar 5.7 %, from its running quark masses m_c = 0.85,
m_b = 3.43 GeV, measured on the event record with its settings by the issue-30 review), Pythia's
own particle-data table and event record, and the git blob id of SVJProduction's
``test/dict_xsec_Zprime.txt`` at commit e5f2003 (final EXO-19-020 cross sections).
"""

from __future__ import annotations

import hashlib
import math

import pytest
from click.testing import CliRunner

from svjscout.core.exceptions import GenerationError
from svjscout.samples.generate import GenerationConfig, reference_signal_xsec
from svjscout.samples.processes import (
    DARK_INVISIBLES,
    DARK_PSEUDOSCALARS,
    DARK_VECTORS,
    DEFAULT_BIAS,
    mass_insertion_fractions,
    process_settings,
    running_quark_masses,
)
from svjscout.samples.zprime_xsec import SOURCE_BLOB, ZPRIME_XSEC_PB, ZPRIME_XSEC_TABLE, zprime_xsec

# SVJProduction's pseudoscalar fractions at 20 GeV (issue 30, item 2) and today's-before values
B_FRAC, C_FRAC = 0.943, 0.057
POLE_MASS_B_FRAC = 0.88  # the pole-mass recipe this replaces (m_q^2 beta with Pythia's m0)


def test_running_quark_masses_are_svjproductions():
    m = running_quark_masses(20.0)
    assert m[4] == pytest.approx(0.85, abs=0.005) and m[5] == pytest.approx(3.43, abs=0.005)
    assert m[1] == m[2] == m[3] == 0.0  # lighter than Lambda_QCD: no running mass, no decay
    f = mass_insertion_fractions(20.0)
    assert sorted(f) == [4, 5]
    assert f[5] == pytest.approx(B_FRAC, abs=0.001) and f[4] == pytest.approx(C_FRAC, abs=0.001)
    # closed form: BR(b) = m_b^2 / (m_b^2 + m_c^2) with the running masses, no phase-space factor
    assert f[5] == pytest.approx(m[5] ** 2 / (m[5] ** 2 + m[4] ** 2), rel=1e-12)


def _pythia(settings):
    import pythia8mc  # heavy optional dependency: only the Pythia tests load it

    p = pythia8mc.Pythia("", False)
    for line in settings:
        assert p.readString(line), line
    return p


def test_pythia_decay_table_has_the_benchmark_fractions():
    """Pythia's particle-data table after our readString lines: the decay table it samples."""
    rinv = 0.3
    p = _pythia(process_settings("svj", mzprime=2000, rinv=rinv))
    for pid in DARK_PSEUDOSCALARS + DARK_VECTORS:
        entry = p.particleData.particleDataEntryPtr(pid)
        br: dict[int, float] = {}
        for i in range(entry.sizeChannels()):
            ch = entry.channel(i)
            products = {abs(ch.product(k)) for k in range(ch.multiplicity())}
            assert ch.multiplicity() == 2 and len(products) == 1, (pid, i, products)
            quark = products.pop()
            br[quark] = br.get(quark, 0.0) + ch.bRatio()
        invisible = 51 if pid in DARK_PSEUDOSCALARS else 53
        assert set(br) - {invisible} <= {1, 2, 3, 4, 5} and invisible in br, (pid, br)
        assert br[invisible] == pytest.approx(rinv, abs=1e-6)
        visible = {q: v / (1.0 - rinv) for q, v in br.items() if q not in DARK_INVISIBLES}
        if pid in DARK_PSEUDOSCALARS:
            assert sorted(visible) == [4, 5], (pid, visible)  # no u, d, s
            assert visible[5] == pytest.approx(B_FRAC, abs=0.001), (pid, visible)
            assert visible[4] == pytest.approx(C_FRAC, abs=0.001), (pid, visible)
        else:
            assert visible == pytest.approx({q: 0.2 for q in (1, 2, 3, 4, 5)}, abs=1e-6), (pid, visible)


@pytest.mark.slow
def test_pseudoscalar_decays_on_the_event_record():
    """Count the decay products of every visible dark-pseudoscalar decay in 400 Z' events."""
    p = _pythia(process_settings("svj", mzprime=2000, rinv=0.3) + ["Random:seed = 4242"])
    assert p.init()
    products = {"b": 0, "c": 0, "light": 0}
    for _ in range(400):
        assert p.next()
        ev = p.event
        for i in range(ev.size()):
            prt = ev[i]
            if prt.idAbs() not in DARK_PSEUDOSCALARS or prt.isFinal():
                continue
            d = ev[prt.daughter1()].idAbs()
            if d == prt.idAbs() or d in DARK_INVISIBLES:  # a recoil copy, an invisible decay
                continue
            assert prt.daughter2() - prt.daughter1() == 1 and ev[prt.daughter2()].idAbs() == d, i
            products["b" if d == 5 else "c" if d == 4 else "light"] += 1
    n = sum(products.values())
    frac_b = products["b"] / n
    sigma = math.sqrt(B_FRAC * (1 - B_FRAC) / n)  # binomial: one draw per decay
    assert n > 800, products
    assert abs(frac_b - B_FRAC) < 3 * sigma, (products, frac_b, sigma)
    assert abs(frac_b - POLE_MASS_B_FRAC) > 5 * sigma, (products, frac_b, sigma)  # the old recipe is excluded
    assert products["light"] == 0, products


def test_xsec_table_is_svjproductions_file():
    blob = ZPRIME_XSEC_TABLE.encode()
    assert hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest() == SOURCE_BLOB
    assert sorted(ZPRIME_XSEC_PB) == [float(m) for m in range(500, 5200, 100)]


def test_xsec_at_the_table_points_and_between():
    for mass, value in ZPRIME_XSEC_PB.items():
        assert zprime_xsec(mass) == value and reference_signal_xsec(mass) == value
    assert [reference_signal_xsec(m) for m in (1500, 2000, 3000)] == [1.875, 0.4537, 0.0412]
    assert reference_signal_xsec(2500) == 0.1304  # not the 3-point interpolation's 0.1367
    assert reference_signal_xsec(5100) == 0.0004593
    # log-linear: a midpoint is the geometric mean of its neighbours
    assert zprime_xsec(2450) == pytest.approx(math.sqrt(0.1658 * 0.1304), rel=1e-12)
    with pytest.raises(GenerationError, match="500-5100 GeV.*--xsec"):
        reference_signal_xsec(5200)
    with pytest.raises(GenerationError, match="500-5100 GeV"):
        reference_signal_xsec(450)
    with pytest.raises(GenerationError, match="m_Z' = 6000 GeV.*500-5100 GeV"):
        GenerationConfig("svj", 10, mzprime=6000.0)  # before any event is generated
    assert GenerationConfig("svj", 10, mzprime=6000.0, xsec=1e-4).xsec == 1e-4


def test_xsec_interpolation_against_held_out_points():
    """Hold every interior point out in turn: interpolating over 200 GeV misses it by < 1.5 %."""
    masses = sorted(ZPRIME_XSEC_PB)
    worst = 0.0
    for held in masses[1:-1]:
        table = {m: v for m, v in ZPRIME_XSEC_PB.items() if m != held}
        worst = max(worst, abs(zprime_xsec(held, table) / ZPRIME_XSEC_PB[held] - 1.0))
    assert worst < 0.015
    table = {m: v for m, v in ZPRIME_XSEC_PB.items() if m != 2500.0}
    assert zprime_xsec(2500, table) == pytest.approx(0.1304, rel=0.005)


def test_generate_help_states_the_actual_bias_default():
    from svjscout.jobs.commands_run import generate

    text = " ".join(CliRunner().invoke(generate, ["--help"]).output.split())
    assert f"Default: {DEFAULT_BIAS['qcd']:g} for qcd, 0 (unbiased) otherwise." in text
