"""pyhf's expected limits on the HistFactory workspace of each card against the quick limits and Combine.

For each card of ``DIR`` (``index.json``, or ``--card FILE`` repeated): the workspace of
:func:`svjscout.datacards.pyhf_export.export_card` (written to a scratch folder, the cards dir is not
touched), pyhf's expected asymptotic CLs limits (q~, the 5 quantiles, each the root of
``CLs_N(r) = 0.05``, :func:`~svjscout.datacards.pyhf_export.expected_limits`) with normsys code1 (the
workspace's default) and, with ``--code4``, code4; the quick limits (:func:`svjscout.datacards.card_limits`);
Combine's (``--env SCRIPT`` or ``combine`` on PATH; as ``benchmarks/compare_combine.py`` runs it).
Prints one row per point and quantile with the relative differences ``pyhf / other - 1``.

``--quick-interp`` also computes the quick limits with pyhf's interpolation of the asymmetric lnN
(``code1``: piecewise exponential, ``code4``: pyhf's polynomial for ``|alpha| < 1``) in place of
Combine's ``logKappaForX``: a second implementation of the same likelihood with the other
interpolation, which shows whether a pyhf-Combine difference is the interpolation alone
(``pyhf/quick_interp`` ~ 0) or something else.

Usage:
    python benchmarks/compare_pyhf.py DIR|DIR/datacards|index.json [--card FILE ...]
        [--env /work/combine-build/env.sh] [--no-combine] [--code4] [--quick-interp] [--keep DIR]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

KEYS = ("exp-2", "exp-1", "exp0", "exp+1", "exp+2")

# pyhf's code4 (interpolators/code4.py, alpha0 = 1): the coefficients a_1..a_6 of 1 + sum a_i alpha^i
# are A^-1 b with b = (k_up - 1, k_dn - 1, ln k_up k_up, -ln k_dn k_dn, ln^2 k_up k_up, ln^2 k_dn k_dn).
_A_INV = np.array([
    [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
    [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
    [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
    [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
    [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
    [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
])


def pyhf_log_kappa(code: str):
    """A drop-in for :func:`svjscout.datacards.likelihood.log_kappa` with pyhf's interpolation ``code``.

    ``log_kappa`` returns ``(logK, d[theta logK]/d theta)`` with the factor ``exp(theta logK)``;
    ``log_hi = ln k_up`` and ``log_lo = -ln k_dn``."""
    def code1(theta, log_hi, log_lo):
        outer = np.where(np.asarray(theta, float) >= 0, log_hi, log_lo)
        return outer, outer

    def code4(theta, log_hi, log_lo):
        theta, log_hi, log_lo = np.broadcast_arrays(np.asarray(theta, float), log_hi, log_lo)
        kup, kdn = np.exp(log_hi), np.exp(-log_lo)
        lu, ld = np.log(kup), np.log(kdn)
        b = np.stack(np.broadcast_arrays(kup - 1, kdn - 1, lu * kup, -ld * kdn, lu**2 * kup, ld**2 * kdn))
        a = np.tensordot(_A_INV, b, axes=1)  # (6, ...)
        powers = np.stack([theta ** (i + 1) for i in range(6)])
        dpowers = np.stack([(i + 1) * theta ** i for i in range(6)])
        inside = np.abs(theta) < 1
        f = np.where(inside, 1 + (a * powers).sum(0), 1.0)  # the polynomial only where it is used
        df = (a * dpowers).sum(0)
        inner_logk = np.where(np.abs(theta) > 1e-12, np.log(f) / np.where(theta == 0, 1, theta), a[0])
        outer = np.where(theta >= 0, log_hi, log_lo)
        return np.where(inside, inner_logk, outer), np.where(inside, df / f, outer)

    return {"code1": code1, "code4": code4}[code]


def quick_with_interp(card: str, code: str) -> dict:
    """The quick limits of ``card`` with pyhf's asymmetric-lnN interpolation ``code``."""
    from svjscout.datacards import card_limits, likelihood

    orig = likelihood.log_kappa
    likelihood.log_kappa = pyhf_log_kappa(code)
    try:
        return card_limits(card, observed=False)
    finally:
        likelihood.log_kappa = orig


def compare(cards: dict[str, str], env_script: str | None = None, use_combine: bool = True, code4: bool = False,
            keep: str | None = None, quick_interp: bool = False) -> list[dict]:
    from compare_combine import run_combine

    from svjscout.datacards import card_limits
    from svjscout.datacards.pyhf_export import expected_limits, write_workspace

    scratch = keep or tempfile.mkdtemp(prefix="compare_pyhf_")
    have_combine = use_combine and (env_script is not None or shutil.which("combine") is not None)
    rows = []
    for point, card in cards.items():
        pdir = os.path.join(scratch, point)
        os.makedirs(pdir, exist_ok=True)
        ws_path, meta = write_workspace(card, os.path.join(pdir, "workspace.json"))
        with open(ws_path) as f:
            spec = json.load(f)
        quick = card_limits(card, observed=False)
        py1 = expected_limits(spec, meta, "code1")
        py4 = expected_limits(spec, meta, "code4") if code4 else {}
        q1 = quick_with_interp(card, "code1") if quick_interp else {}
        q4 = quick_with_interp(card, "code4") if quick_interp and code4 else {}
        comb: dict = {}
        if have_combine:
            try:
                comb = run_combine(card, os.path.join(pdir, "combine"), 5.3 * quick["exp0"], env_script)
            except RuntimeError as err:
                print(f"# {point}: {err}", file=sys.stderr)
        for k in KEYS:
            row = {"point": point, "quantile": k, "pyhf": py1[k], "quick": quick[k],
                   "pyhf/quick-1": py1[k] / quick[k] - 1.0, "combine": comb.get(k),
                   "pyhf/combine-1": py1[k] / comb[k] - 1.0 if comb.get(k) else None,
                   "quick/combine-1": quick[k] / comb[k] - 1.0 if comb.get(k) else None,
                   "asymmetric_lnN": meta["asymmetric_lnN"], "signal_scale": meta["signal_scale"]}
            if code4:
                row["pyhf_code4"] = py4[k]
                row["code4/combine-1"] = py4[k] / comb[k] - 1.0 if comb.get(k) else None
                row["code4/quick-1"] = py4[k] / quick[k] - 1.0
            if q1:
                row["quick_code1"] = q1[k]
                row["pyhf/quick_code1-1"] = py1[k] / q1[k] - 1.0
            if q4:
                row["quick_code4"] = q4[k]
                row["code4/quick_code4-1"] = py4[k] / q4[k] - 1.0
            rows.append(row)
    if keep is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    def pct(v):
        return "       -" if v is None else f"{100 * v:+7.2f}%"

    def num(v):
        return "          -" if v is None else f"{v:11.4g}"

    code4 = any("pyhf_code4" in r for r in rows)
    qi = any("quick_code1" in r for r in rows)
    head = (f"{'point':22s} {'quantile':8s} {'pyhf':>11s} {'quick':>11s} {'Combine':>11s} {'py/quick':>8s} "
            f"{'py/Comb':>8s} {'qk/Comb':>8s}" + (f" {'pyhf c4':>11s} {'c4/Comb':>8s}" if code4 else "")
            + (f" {'py/qk c1':>8s}" if qi else "") + (f" {'c4/qk c4':>8s}" if qi and code4 else ""))
    lines = [head]
    for r in rows:
        line = (f"{r['point']:22s} {r['quantile']:8s} {num(r['pyhf'])} {num(r['quick'])} {num(r['combine'])} "
                f"{pct(r['pyhf/quick-1'])} {pct(r['pyhf/combine-1'])} {pct(r['quick/combine-1'])}")
        if code4:
            line += f" {num(r.get('pyhf_code4'))} {pct(r.get('code4/combine-1'))}"
        if qi:
            line += f" {pct(r.get('pyhf/quick_code1-1'))}"
            if code4:
                line += f" {pct(r.get('code4/quick_code4-1'))}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cards_dir", nargs="?")
    ap.add_argument("--card", action="append", default=[], help="a card file (point name: its folder)")
    ap.add_argument("--env", default=None, help="setup script of Combine (sourced in a subshell)")
    ap.add_argument("--no-combine", action="store_true")
    ap.add_argument("--code4", action="store_true", help="also pyhf with normsys interpcode code4")
    ap.add_argument("--quick-interp", action="store_true",
                    help="also the quick limits with pyhf's code1 (and, with --code4, code4) interpolation")
    ap.add_argument("--keep", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    cards: dict[str, str] = {}
    if a.cards_dir:
        from svjscout.datacards.limits import read_index
        cards.update(read_index(a.cards_dir)[1])
    for c in a.card:
        cards[os.path.basename(os.path.dirname(os.path.abspath(c))) or c] = c
    if not cards:
        ap.error("no cards: give DIR or --card")
    rows = compare(cards, a.env, not a.no_combine, a.code4, a.keep, a.quick_interp)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
