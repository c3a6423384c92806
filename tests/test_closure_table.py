"""Closure table with empty M_T bins: no NaN in the chi2, the summary or its JSON (issue 11, item 10)."""

import json

import numpy as np
import pytest

from svjscout.datacards import abcd_prediction
from svjscout.jobs import report
from svjscout.jobs.main_job import _closure_tables
from svjscout.processors.histograms import book

MT_EDGES = [650.0, 1000.0, 1500.0, 3000.0]
DATASETS = {"qcd": {"kind": "background", "xsec": 1.0, "sumw": 1.0}}
WP = (0.5, 0.5)
# one score pair inside each ABCD region of WP (0.5, 0.5)
REGION_XY = {"A": (0.8, 0.2), "B": (0.8, 0.8), "C": (0.2, 0.2), "D": (0.2, 0.8)}
MT_OF_BIN = [800.0, 1200.0, 2000.0]


def _filled():
    """Real processor histogram (``book``) filled event by event.

    SP: 4 events per region in every M_T bin (all defined).
    VP: bin 0 filled with a non-closing pattern; bin 1 has no events at all (n_C = 0);
    bin 2 has events in C and D only (n_A = n_B = 0, so nhat_B = 0 = n_B: no events to compare).
    """
    h = book(MT_EDGES, list(DATASETS))["xy_mt"]
    counts = {"SP": {0: dict(A=4, B=4, C=4, D=4), 1: dict(A=4, B=4, C=4, D=4), 2: dict(A=4, B=4, C=4, D=4)},
              "VP": {0: dict(A=6, B=3, C=4, D=5), 1: dict(), 2: dict(C=5, D=2)}}
    for plane, bins in counts.items():
        for i, regions in bins.items():
            for r, k in regions.items():
                x, y = REGION_XY[r]
                h.fill(dataset="qcd", plane=plane, x=np.full(k, x), y=np.full(k, y), mt=np.full(k, MT_OF_BIN[i]),
                       weight=np.full(k, 0.5))
    return h


def test_abcd_prediction_leaves_empty_bins_out_of_chi2():
    t = abcd_prediction(_filled(), DATASETS, WP, plane="VP")
    assert t.defined.tolist() == [True, False, False]
    assert np.isfinite(t.chi2) and np.isfinite(t.pvalue)
    assert t.ndf == 1
    # the one defined bin: nhat = 6*5/4 = 7.5 vs n_B = 3 (weights 0.5: 3.75 vs 1.5)
    assert t.nhat_B[0] == pytest.approx(3.75) and t.n_B[0] == pytest.approx(1.5)
    assert t.chi2 == pytest.approx(t.pull[0] ** 2)
    ts = abcd_prediction(_filled(), DATASETS, WP, plane="SP")
    assert ts.defined.all() and ts.ndf == 3 and ts.chi2 == pytest.approx(0.0)


def test_closure_tables_are_json_safe():
    closure = _closure_tables(_filled(), DATASETS, WP)
    text = json.dumps(closure, allow_nan=False)  # raises on NaN / inf
    back = json.loads(text)
    vp = back["VP"]
    assert vp["defined"] == [True, False, False] and vp["ndf"] == 1
    assert vp["nhat_b"][1] is None and vp["delta"][1] is None and vp["pull"][1] is None
    assert vp["delta"][2] is None and vp["pull"][2] is None
    assert vp["chi2"] is not None and vp["pvalue"] is not None


def test_summary_table_shows_no_events_instead_of_nan(tmp_path):
    closure = _closure_tables(_filled(), DATASETS, WP)
    lines = report.closure_table_lines(closure)
    vp = lines[lines.index("### VP"):]
    row1 = next(line for line in vp if line.startswith("| 1000-1500 |"))
    row2 = next(line for line in vp if line.startswith("| 1500-inf |"))  # the last bin holds the overflow
    assert "n/a (no events)" in row1 and "n/a (no events)" in row2
    assert "chi2/ndf = " in "\n".join(vp) and any(line.startswith("chi2/ndf = ") and "/1," in line for line in vp)
    assert not any("nan" in line.lower() for line in lines)

    path = report.write_summary(tmp_path, "t", {"datasets": DATASETS}, WP, "configured", None, closure, {},
                                {"cards": []}, {"report": 0.1})
    text = path.read_text()
    assert "n/a (no events)" in text and "nan" not in text.lower()


def test_summary_with_raw_nan_input(tmp_path):
    """write_summary is safe even when given NaN (an ABCDTable's raw arrays, no "defined"), not only None."""
    t = abcd_prediction(_filled(), DATASETS, WP, plane="VP")
    tab = {"edges": t.edges.tolist(), "n_b": t.n_B.tolist(), "nhat_b": t.nhat_B.tolist(), "delta": t.delta.tolist(),
           "pull": t.pull.tolist(), "chi2": t.chi2, "ndf": t.ndf, "pvalue": t.pvalue}
    text = report.write_summary(tmp_path, "t", {"datasets": DATASETS}, WP, "configured", None, {"VP": tab}, {},
                                {"cards": []}, {}).read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| 1000-1500 |", "| 1500-inf |"))]
    assert len(rows) == 2 and all("n/a (no events)" in r for r in rows)
    assert "nan" not in text.lower()
    empty = {"edges": [650.0, 1000.0], "n_b": [0.0], "nhat_b": [float("nan")], "delta": [float("nan")],
             "pull": [float("nan")], "chi2": 0.0, "ndf": 0, "pvalue": float("nan")}
    text = report.write_summary(tmp_path, "t", {"datasets": DATASETS}, WP, "configured", None, {"VP": empty}, {},
                                {"cards": []}, {}).read_text()
    assert "chi2/ndf = n/a (no M_T bin with events to compare)" in text and "nan" not in text.lower()
