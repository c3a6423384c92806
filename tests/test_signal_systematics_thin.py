"""Signal systematics from thin signal MC, built event by event (svjscout.datacards.systematics).

The signal here is a list of events (cell, weight), as the processor fills it: the nominal
``xy_mt`` and every variation of ``xy_mt_syst`` hold per cell the sum of the weights and of the
squared weights. Every expected number is computed by hand from the event lists:

* region B holds 40 events (one in M_T bin 0, 39 in bin 1), A 20 (5 + 15), C 30 (3 unequal
  weights in bin 0, 27 in bin 1), D one (bin 1), weight 0.5 unless said otherwise;
* ``jes``: the down variation moves D's only event into C (D's yield goes to 0), up is nominal;
* ``unclustered``: single events: up moves one B event to A, down another B event to D;
* ``jer``: a large coherent shift: up moves 20 B events (the single event of B's bin 0 among
  them) to A, down moves 10 other B events to A;
* ``isr``: every event reweighted by 1.1 (up) and 0.9 (down).
"""


import numpy as np
import pytest

from svjscout.datacards import parse_datacard, validate_datacard, write_datacards
from svjscout.datacards.parser import parse_text
from svjscout.datacards.regions import REGIONS
from svjscout.datacards.systematics import (
    CardRow,
    decide_region,
    mcstat_term,
    row_tokens,
    signal_systematics,
    source_kind,
    summary_lines,
    variation_effect,
)
from svjscout.datacards.toys import realistic_toy
from svjscout.processors.histograms import book_syst

WP = (0.775, 0.875)
IX, IY = 31, 35  # threshold indices of WP on the 40 x 40 score grid
SIG = "svj_mz1500_rinv0.3"
W = 0.5
WKW = {"allow_unbacked": True}


def _cells(region, n, mt, start=0):
    """n distinct (x, y, mt) cells of a region (A: X>x0,Y<y0  B: X>x0,Y>y0  C: X<x0,Y<y0  D: X<x0,Y>y0)."""
    xs = range(IX, 40) if region in "AB" else range(0, IX)
    ys = range(IY, 40) if region in "BD" else range(0, IY)
    grid = [(x, y) for x in xs for y in ys]
    return [(x, y, mt) for x, y in grid[start:start + n]]


def _nominal_events():
    ev = {}
    ev["B"] = [(c, W) for c in _cells("B", 1, 0)] + [(c, W) for c in _cells("B", 39, 1, start=1)]
    ev["A"] = [(c, W) for c in _cells("A", 5, 0)] + [(c, W) for c in _cells("A", 15, 1, start=5)]
    ev["C"] = ([(c, w) for c, w in zip(_cells("C", 3, 0), (0.5, 1.0, 1.5))]
               + [(c, W) for c in _cells("C", 27, 1, start=3)])
    ev["D"] = [(c, W) for c in _cells("D", 1, 1)]
    return ev


def _fill(events, n_mt=2):
    """(sumw, sumw2) arrays (40, 40, n_mt) of a list of ((x, y, mt), w)."""
    v, v2 = np.zeros((40, 40, n_mt)), np.zeros((40, 40, n_mt))
    for (x, y, m), w in events:
        v[x, y, m] += w
        v2[x, y, m] += w * w
    return v, v2


def _flat(ev):
    return [e for r in "ABCD" for e in ev[r]]


def _move(ev, src, dst, idx):
    """Copy of ev with the events ``idx`` of region src moved to fresh cells of region dst (same M_T bin)."""
    out = {r: list(v) for r, v in ev.items()}
    moved = [out[src][i] for i in idx]
    out[src] = [e for i, e in enumerate(out[src]) if i not in set(idx)]
    free = [c for c in _cells(dst, 1400, 0) + _cells(dst, 1400, 1) if c not in {e[0] for e in _flat(out)}]
    for (cell, w) in moved:
        target = next(c for c in free if c[2] == cell[2])
        free.remove(target)
        out[dst].append((target, w))
    return out


def _variations():
    nom = _nominal_events()
    reweight = lambda f: {r: [(c, w * f) for c, w in v] for r, v in nom.items()}  # noqa: E731
    return {
        "jes_up": nom, "jes_down": _move(nom, "D", "C", [0]),
        "unclustered_up": _move(nom, "B", "A", [5]), "unclustered_down": _move(nom, "B", "D", [6]),
        "jer_up": _move(nom, "B", "A", list(range(20))), "jer_down": _move(nom, "B", "A", list(range(20, 30))),
        "isr_up": reweight(1.1), "isr_down": reweight(0.9),
    }


@pytest.fixture(scope="module")
def thin():
    """(xy_mt, xy_mt_syst, datasets): realistic_toy's background with the thin event-list signal."""
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1, with_data=False)
    view = h.view(flow=False)
    names, planes = list(h.axes["dataset"]), list(h.axes["plane"])
    i, p = names.index(SIG), planes.index("SP")
    v, v2 = _fill(_flat(_nominal_events()))
    view["value"][i, p], view["variance"][i, p] = v, v2
    view["value"][i, planes.index("VP")], view["variance"][i, planes.index("VP")] = 0.0, 0.0
    var = _variations()
    hs = book_syst(h.axes["mt"].edges, [SIG], list(var), 40)
    sv = hs.view(flow=False)
    for k, name in enumerate(var):
        a, a2 = _fill(_flat(var[name]))
        sv["value"][0, k, p], sv["variance"][0, k, p] = a, a2
    return h, hs, ds


def _syst(thin, groups=((0,), (1,)), **kw):
    h, hs, ds = thin
    return signal_systematics(h, hs, ds, WP, [list(g) for g in groups], SIG, "SP", **kw)


def _reg(s, src, r):
    info = s.sources.get(src) or s.pruned[src]
    return info["regions"][REGIONS.index(r)]


def test_single_event_noise_is_pruned_and_a_kappa_0_never_written(thin):
    assert (source_kind("jes"), source_kind("isr"), source_kind("foo")) == ("kinematic", "weight", "unknown")
    s = _syst(thin)
    # jes: D's only event migrates out (down yield 0, the old per-channel kappa 0 -> 0.1): 1 sigma, pruned
    d = _reg(s, "jes", "D")
    assert d["down"]["effect"] == pytest.approx(-1.0) and d["down"]["z"] == pytest.approx(1.0)
    assert d["status"] == "pruned" and "MC noise" in d["why"]
    c = _reg(s, "jes", "C")  # ... and lands in C: +0.5 of 16.5, one event: 1 sigma
    assert c["down"]["effect"] == pytest.approx(0.5 / 16.5) and c["down"]["z"] == pytest.approx(1.0)
    assert "jes" not in s.sources and s.skipped["jes"].startswith("pruned in every region")
    # unclustered: one event each way, 1 sigma everywhere: pruned
    assert "unclustered" not in s.sources and "unclustered" in s.pruned
    for r, eff in (("B", -1 / 40), ("A", 1 / 20), ("D", 1.0)):
        reg = _reg(s, "unclustered", r)
        assert max(abs(reg["up"]["effect"]), abs(reg["down"]["effect"])) == pytest.approx(abs(eff))
        assert max(reg["up"]["z"], reg["down"]["z"]) == pytest.approx(1.0) and reg["status"] == "pruned"
    texts = [t for row in s.card_rows() for t in row[1].values()]
    assert not any(float(x) in (0.0, 0.1) for t in texts for x in t.split("/"))


def test_large_coherent_shift_is_kept_and_one_sided_symmetrised(thin):
    s = _syst(thin)
    b, a = _reg(s, "jer", "B"), _reg(s, "jer", "A")
    # B: up -20 of 40 events (z = sqrt(20)), down -10 (z = sqrt(10)); one-sided: the larger (up) for both
    assert b["up"]["effect"] == pytest.approx(-0.5) and b["up"]["z"] == pytest.approx(np.sqrt(20))
    assert b["down"]["effect"] == pytest.approx(-0.25) and b["down"]["z"] == pytest.approx(np.sqrt(10))
    assert b["status"] == "kept" and b["symmetrised"] and b["text"] == "0.5" and b["kappa"] == pytest.approx([2.0, 0.5])
    assert a["status"] == "kept" and a["symmetrised"] and a["text"] == "2"  # +100 % / +50 %
    assert _reg(s, "jer", "C")["status"] == "pruned" and _reg(s, "jer", "D")["status"] == "pruned"
    # B's M_T bin 0 held one event, which jer up moves out (a per-channel kappa 0): it takes B's kappa
    row = dict(next(r for r in s.card_rows() if r[0] == "jer")[1])
    assert row == {(1, 0): "0.5", (1, 1): "0.5", (0, 0): "2", (0, 1): "2"}
    # isr: every event x1.1 / x0.9: +-10 % with sigma 0.1 / sqrt(n), z = sqrt(n); D (one event) pruned
    for r, n in (("A", 20), ("B", 40)):
        reg = _reg(s, "isr", r)
        assert reg["up"]["effect"] == pytest.approx(0.1) and reg["down"]["effect"] == pytest.approx(-0.1)
        assert reg["up"]["sigma"] == pytest.approx(0.1 / np.sqrt(n)) and reg["up"]["z"] == pytest.approx(np.sqrt(n))
        assert reg["text"] == "0.9/1.1" and not reg["symmetrised"]
        assert reg["up"]["sigma_bound"] > 10 * reg["up"]["sigma"]  # the yields' own errors would hide it
    assert _reg(s, "isr", "D")["status"] == "pruned"
    # the threshold is configurable: at 5 sigma jer's B (4.5 sigma) goes too, isr's B (6.3) stays
    s5 = _syst(thin, config={"prune_sigma": 5.0})
    assert _reg(s5, "jer", "B")["status"] == "pruned" and _reg(s5, "isr", "B")["status"] == "kept"


def test_decide_region_rules():
    def eff(e, z):
        return {"effect": e, "z": z, "sigma": abs(e) / z if z else 0.0}
    # one-sided with the down variation the larger: theta = -1 keeps it, k = 1 / k_down
    d = decide_region(eff(-0.01, 5), eff(-0.03, 5))
    assert d["symmetrised"] and d["kappa"][1] == pytest.approx(1 / 0.97)
    # one side without effect is one-sided too
    d = decide_region(eff(0.05, 5), eff(0.0, 0))
    assert d["symmetrised"] and d["text"] == "1.05"
    # two-sided: the pair as it is
    assert decide_region(eff(0.05, 5), eff(-0.04, 5))["text"] == "0.96/1.05"
    # an emptied side: the other mirrored; both sides empty: pruned, never 0.1
    d = decide_region(eff(-1.0, 9), eff(0.2, 5))
    assert d["status"] == "kept" and d["text"] == "0.83333333" and d["emptied"] == ["up"]  # theta=-1 gives +20 %
    d = decide_region(eff(-1.0, 9), eff(-1.0, 9))
    assert d["status"] == "pruned" and "total loss" in d["why"]
    # small or insignificant: pruned
    assert decide_region(eff(0.0005, 50), eff(-0.0005, 50))["status"] == "pruned"
    assert decide_region(eff(0.3, 1.9), eff(-0.3, 1.9))["status"] == "pruned"


def test_variation_effect_event_correlated_error_in_crowded_cells():
    """Cells with several events (the signal's scores pile up in the corner cells)."""
    # kinematic: one of 11 unit-weight events leaves its cell: 1 event, 1 sigma (the naive
    # (sqrt(q_v) - sqrt(q_n))^2 would give (sqrt(11) - sqrt(10))^2 = 0.024 and 6.5 sigma)
    e = variation_effect(np.array([11.0]), np.array([11.0]), np.array([10.0]), np.array([10.0]), "kinematic")
    assert e["effect"] == pytest.approx(-1 / 11) and e["sigma"] == pytest.approx(1 / 11)
    assert e["z"] == pytest.approx(1.0)
    # ... and one event leaves a 3-event cell while another enters an empty one: sigma^2 = 1 + 1
    e = variation_effect(np.array([3.0, 0.0]), np.array([3.0, 0.0]), np.array([2.0, 1.0]), np.array([2.0, 1.0]),
                         "kinematic")
    assert e["effect"] == 0.0 and e["sigma"] == pytest.approx(np.sqrt(2) / 3)
    # weight: two unit-weight events in one cell reweighted 0.5 and 1.5 (sum unchanged), one event
    # of weight 2 reweighted 1.1 in another: sum_e (w_var - w_nom)^2 = 0.25 + 0.25 + 0.04 exactly
    nom, nom2 = np.array([2.0, 2.0]), np.array([2.0, 4.0])
    var, var2 = np.array([2.0, 2.2]), np.array([0.25 + 2.25, 4.84])
    e = variation_effect(nom, nom2, var, var2, "weight")
    assert e["effect"] == pytest.approx(0.2 / 4.0) and e["sigma"] == pytest.approx(np.sqrt(0.54) / 4.0)
    assert e["sigma_bound"] == pytest.approx(np.sqrt(2.5 + 4.84 + 6.0) / 4.0)  # the yields' errors: far larger
    # unknown source: the larger of the two estimates
    u = variation_effect(nom, nom2, var, var2)
    assert u["sigma"] >= e["sigma"] and u["sigma"] == pytest.approx(np.sqrt(0.5 + 0.84) / 4.0)


def test_mcstat_gmn_below_neff_10_lnn_above(thin):
    s = _syst(thin, gmn=True)
    g = {s.channels[r][i]: v for (r, i), v in s.mcstat_gmn.items()}
    lnn = {s.channels[r][i]: k for (r, i), k in s.mcstat.items()}
    # one event of weight 0.5: N 1, alpha 0.5; five: N 5, alpha 0.5
    assert g["SP_B_0"] == {"N": 1, "alpha": pytest.approx(0.5), "n_eff": pytest.approx(1.0)}
    assert g["SP_A_0"]["N"] == 5 and g["SP_A_0"]["alpha"] == pytest.approx(0.5)
    assert g["SP_D_1"]["N"] == 1 and g["SP_D_1"]["alpha"] == pytest.approx(0.5)
    # weights 0.5, 1, 1.5: N_eff = 3^2 / 3.5 = 2.571 -> N 3, alpha = 3 / 3 = 1
    assert g["SP_C_0"]["n_eff"] == pytest.approx(9 / 3.5) and g["SP_C_0"]["N"] == 3
    assert g["SP_C_0"]["alpha"] == pytest.approx(1.0)
    # N_eff >= 10: lnN 1 + 1/sqrt(N_eff)
    assert lnn == {"SP_B_1": pytest.approx(1 + 1 / np.sqrt(39)), "SP_A_1": pytest.approx(1 + 1 / np.sqrt(15)),
                   "SP_C_1": pytest.approx(1 + 1 / np.sqrt(27))}
    # no signal (D_0): no term; N * alpha equals the channel's yield
    assert "SP_D_0" in s.mcstat_skipped and "SP_D_0" not in g
    for (r, i), v in s.mcstat_gmn.items():
        assert v["N"] * v["alpha"] == pytest.approx(s.nominal[r, i], rel=1e-12)
    # the threshold is configurable
    s40 = _syst(thin, gmn=True, config={"mcstat_neff_min": 40})
    assert s40.mcstat_gmn[(1, 1)]["N"] == 39 and (1, 1) not in s40.mcstat
    # the rows: gmN with its count, alpha on the channel's sig column
    rows = {r[0]: r for r in s.card_rows()}
    assert rows["mcstat_SP_B_0"].kind == "gmN" and rows["mcstat_SP_B_0"].count == 1
    assert rows["mcstat_SP_B_1"].kind == "lnN" and rows["mcstat_SP_B_1"].count is None
    # without gmN support in the writer: the lnN 1 + 1/sqrt(N_eff) and the channel listed
    s0 = _syst(thin, gmn=False)
    assert s0.mcstat[(1, 0)] == pytest.approx(2.0) and "SP_B_0" in s0.mcstat_gmn_wanted and not s0.mcstat_gmn


def test_mcstat_term_closed_forms():
    assert mcstat_term(10.0, 10.0) == {"type": "lnN", "kappa": pytest.approx(1 + 1 / np.sqrt(10)), "n_eff": 10.0}
    t = mcstat_term(4.5, 4.5 * 0.5)  # 9 events of weight 0.5
    assert (t["type"], t["N"], t["alpha"]) == ("gmN", 9, pytest.approx(0.5))
    assert mcstat_term(1.0, 4.0)["N"] == 1  # N_eff 0.25 (negative weights): at least 1
    assert mcstat_term(0.0, 1.0)["type"] is None and mcstat_term(1.0, 0.0)["type"] is None


def _card_text(s):
    """A minimal counting card with the rows of ``s`` (bkg 100 everywhere), as the writer lays them out."""
    n = s.nominal.shape[1]
    ridx = [(r, i) for i in range(n) for r in range(4)]
    chans = [s.channels[r][i] for r, i in ridx]
    rows = s.card_rows()
    lines = [f"imax {len(chans)}", "jmax 1", f"kmax {len(rows)}", "---", "bin " + " ".join(chans),
             "observation " + " ".join("100" for _ in chans), "---",
             "bin " + " ".join(c for c in chans for _ in range(2)), "process " + " ".join("sig bkg" for _ in chans),
             "process " + " ".join("0 1" for _ in chans),
             "rate " + " ".join(f"{s.nominal[r, i]:.8g} 100" for r, i in ridx), "---"]
    lines += [" ".join(row_tokens(row, ridx)) for row in rows]
    return "\n".join(lines) + "\n"


def test_gmn_rows_parse_and_validate(thin):
    s = _syst(thin, gmn=True)
    card = parse_text(_card_text(s))
    validate_datacard(card)
    gmn = [x for x in card.systematics if x.type == "gmN"]
    assert {x.name for x in gmn} == {"mcstat_SP_B_0", "mcstat_SP_A_0", "mcstat_SP_C_0", "mcstat_SP_D_1"}
    for x in gmn:
        col = [k for k, v in enumerate(x.values) if v != "-"]
        assert len(col) == 1 and card.col_procs[col[0]] == "sig" and f"mcstat_{card.col_bins[col[0]]}" == x.name
        assert int(x.extra[0]) * float(x.values[col[0]]) == pytest.approx(card.rate(card.col_bins[col[0]], "sig"),
                                                                          rel=1e-7)
    # a plain (name, values) pair is an lnN row
    assert row_tokens(("x", {(0, 0): "1.1"}), [(0, 0)]) == ["x", "lnN", "1.1", "-"]
    assert isinstance(s.card_rows()[0], CardRow) and len(s.card_rows()[0]) == 2


def test_cards_parse_validate_and_report(thin, tmp_path):
    h, hs, ds = thin
    idx = write_datacards(h, ds, WP, tmp_path, xy_mt_syst=hs, signals=[SIG], **WKW)
    card = parse_datacard(tmp_path / "datacards" / idx["cards"][0])
    validate_datacard(card)
    names = [x.name for x in card.systematics]
    assert "jes" not in names and "unclustered" not in names and "jer" in names and "isr" in names
    for x in card.systematics:
        for v in x.values:
            assert v == "-" or all(float(t) not in (0.0, 0.1) for t in v.split("/")), (x.name, v)
    gm = [x for x in card.systematics if x.type == "gmN"]
    point = next(iter(idx["points"].values()))["systematics"]
    if gm:  # the writer writes gmN rows: N * alpha is the rate
        for x in gm:
            col = next(k for k, v in enumerate(x.values) if v != "-")
            assert int(x.extra[0]) * float(x.values[col]) == pytest.approx(card.rate(card.col_bins[col], "sig"),
                                                                           rel=1e-7)
    else:  # it does not yet: the Gaussian-like lnN stands in, and the index says so
        assert point["mcstat_gmn_wanted"]
    # summary.md: words with the numbers of the index
    lines = summary_lines(idx)
    jes = next(line for line in lines if line.startswith("| jes |"))
    assert "no: pruned in every region" in jes and "1.0σ" in jes
    assert any(line.startswith("| jer |") and "symmetrised" in line for line in lines)
    assert any(line.startswith("Signal MC statistics") for line in lines)
    assert not any("{" in line for line in lines)
