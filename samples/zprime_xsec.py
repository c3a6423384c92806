"""The s-channel SVJ benchmark's Z' cross-section table (pb at 13 TeV), embedded with its source.

``ZPRIME_XSEC_TABLE`` is, byte for byte, ``test/dict_xsec_Zprime.txt`` of CMS's signal production
code, github.com/cms-svj/SVJProduction, as of commit e5f2003b45c26f0f1dc6a94a592767e7261fb36c
(Kevin Pedro, 2024-09-17, "update to final cross sections from EXO-19-020"; still the file's
last change at 75e6b04, read 2026-12-06; git blob :data:`SOURCE_BLOB`, which a test recomputes).
Its values are the final cross sections of CMS EXO-19-020 (JHEP 06 (2022) 156, arXiv:2112.11125)
for the leptophobic Z' with the benchmark's couplings (g_q = 0.25, g_dark = 1), m_Z' = 500-5100
GeV in 100 GeV steps. The file's earlier (2017-2019) version holds different numbers (0.77 /
0.1849 / 0.0155 pb at 1.5 / 2 / 3 TeV, a dijet-search normalisation): not these.

:func:`zprime_xsec` interpolates log-linearly (ln sigma linear in m_Z') between neighbouring
points and gives the table's own value at its points; outside 500-5100 GeV it raises.
"""

from __future__ import annotations

import math

from svjscout.core.exceptions import GenerationError

#: Where the table comes from (also written into the generated files' ``xsec_source``).
SOURCE_REPO = "cms-svj/SVJProduction"
SOURCE_PATH = "test/dict_xsec_Zprime.txt"
SOURCE_COMMIT = "e5f2003b45c26f0f1dc6a94a592767e7261fb36c"
#: ``git hash-object`` of the file at :data:`SOURCE_COMMIT` (= of :data:`ZPRIME_XSEC_TABLE`).
SOURCE_BLOB = "51dace2cb63a88f9ac94c09d411aca77ecba28ea"
SOURCE = (
    f"{SOURCE_REPO} {SOURCE_PATH} @ {SOURCE_COMMIT[:7]} (final cross sections of CMS EXO-19-020), "
    "log-linear in m_Z'"
)

#: The file verbatim: "m_Z' [GeV] <TAB> sigma [pb]" per line.
ZPRIME_XSEC_TABLE = (
    "500\t79.21\n"
    "600\t53.32\n"
    "700\t35.89\n"
    "800\t24.16\n"
    "900\t16.26\n"
    "1000\t10.95\n"
    "1100\t7.368\n"
    "1200\t5.086\n"
    "1300\t3.586\n"
    "1400\t2.574\n"
    "1500\t1.875\n"
    "1600\t1.384\n"
    "1700\t1.033\n"
    "1800\t0.7789\n"
    "1900\t0.5923\n"
    "2000\t0.4537\n"
    "2100\t0.3498\n"
    "2200\t0.2713\n"
    "2300\t0.2116\n"
    "2400\t0.1658\n"
    "2500\t0.1304\n"
    "2600\t0.1029\n"
    "2700\t0.08149\n"
    "2800\t0.06476\n"
    "2900\t0.0516\n"
    "3000\t0.0412\n"
    "3100\t0.03297\n"
    "3200\t0.02644\n"
    "3300\t0.02123\n"
    "3400\t0.01707\n"
    "3500\t0.01376\n"
    "3600\t0.01109\n"
    "3700\t0.008951\n"
    "3800\t0.007234\n"
    "3900\t0.005849\n"
    "4000\t0.004731\n"
    "4100\t0.003828\n"
    "4200\t0.003099\n"
    "4300\t0.002509\n"
    "4400\t0.002032\n"
    "4500\t0.001645\n"
    "4600\t0.001331\n"
    "4700\t0.001078\n"
    "4800\t0.0008709\n"
    "4900\t0.0007043\n"
    "5000\t0.000569\n"
    "5100\t0.0004593\n"
)


def _parse(text: str) -> dict[float, float]:
    table = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise GenerationError(f"{SOURCE_PATH} line {n}: expected 'mass<TAB>xsec', got {line!r}")
        table[float(fields[0])] = float(fields[1])
    return table


#: The table parsed: {m_Z' in GeV: sigma in pb}.
ZPRIME_XSEC_PB = _parse(ZPRIME_XSEC_TABLE)


def zprime_xsec(mzprime: float, table: dict[float, float] | None = None) -> float:
    """The benchmark Z' cross section in pb at ``mzprime`` GeV, from :data:`ZPRIME_XSEC_PB`.

    A tabulated mass gives the table's value; between two points, ln sigma is linear in m_Z'.
    ``table`` replaces the embedded one (tests hold points out with it).

    >>> zprime_xsec(2000.0), zprime_xsec(2500.0), round(zprime_xsec(2450.0), 4)
    (0.4537, 0.1304, 0.147)
    """
    table = ZPRIME_XSEC_PB if table is None else table
    masses = sorted(table)
    if mzprime in table:
        return table[mzprime]
    if not masses[0] <= mzprime <= masses[-1]:
        raise GenerationError(
            f"m_Z' = {mzprime:g} GeV is outside the benchmark cross-section table "
            f"({masses[0]:g}-{masses[-1]:g} GeV, {SOURCE_REPO} {SOURCE_PATH}); "
            "give the signal cross section with --xsec"
        )
    hi = next(i for i, m in enumerate(masses) if m > mzprime)
    m0, m1 = masses[hi - 1], masses[hi]
    t = (mzprime - m0) / (m1 - m0)
    return math.exp((1.0 - t) * math.log(table[m0]) + t * math.log(table[m1]))
