"""Quick limits against real CMS Combine (``combine -M AsymptoticLimits``) on every card of a cards dir.

For each point of ``index.json``: the in-package quick limits (:func:`svjscout.datacards.card_limits`,
expected only) and Combine's, run in a scratch folder (the cards dir is not touched) with tight
tolerances::

    text2workspace.py datacard.txt -o workspace.root
    combine -M AsymptoticLimits workspace.root --run expected --rAbsAcc 0 --rRelAcc 1e-4 \\
        --cminDefaultMinimizerTolerance 1e-4 --cminFallbackAlgo Minuit2,Simplex,0:0.1 -v 2 \\
        --rMax <5.3 x quick median>

(without the fallback, Combine's MIGRAD failed at one bisection step of a demo card: delta(nll) 722
where its neighbours have 3.2 and 3.8, and its exp+1 came out 3 % low.)

``--run expected`` builds the Asimov set from the background-only fit to the card's observation, as
the quick limits do (for the background-only Asimov cards of `svjscout run` it equals ``--run
blind``). Prints one row per point and quantile: quick limit, Combine limit, relative difference,
and whether Combine's band cap binds (its +1/+2 sigma bisection stops at 2.02x / 3.04x the median,
see :func:`svjscout.datacards.limits.combine_band_caps`); where it binds, Combine reports the cap,
not the crossing, and the row is compared with the cap instead.

Needs ``combine`` and ``text2workspace.py`` on PATH (``--env SCRIPT`` sources a setup script first,
e.g. /work/combine-build/env.sh), and uproot in this Python to read Combine's output.

Usage:
    python benchmarks/compare_combine.py DIR|DIR/datacards|index.json [--tol 0.005] [--json out.json]
        [--env /work/combine-build/env.sh] [--keep DIR] [--combine-opt=--cminDefaultMinimizerStrategy=1 ...]

Combine runs with ``-v 2``: its log lists ``delta(nll)`` at every r of each crossing search. The
profiled ``delta(nll)`` rises with r, so a point above that of a larger r is a fit Combine did not
converge (seen: ``delta(nll) = 722`` between 3.18 and 3.82); the bisection then goes the wrong way
and Combine's quantile is wrong, not the quick one. Such a search is rerun with other rMax values
(Combine's path, and whether it meets the failing fit, depends on rMax; ``RETRY_FACTORS``) and the
quantile taken from the first clean run (noted in the row); a failure left after the reruns is shown
beside the row.

Exit code: 0 when every uncapped quantile agrees within --tol (and every capped one within --tol of
the cap), 1 otherwise, 2 when Combine failed on a card (named).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

KEYS = ("exp-2", "exp-1", "exp0", "exp+1", "exp+2")
TIGHT = ("--rAbsAcc", "0", "--rRelAcc", "1e-4", "--cminDefaultMinimizerTolerance", "1e-4",
         "--cminFallbackAlgo", "Minuit2,Simplex,0:0.1", "-v", "2")
RETRY_FACTORS = (4.7, 6.1, 3.9)  # rMax / quick median of the reruns
_AT = re.compile(r"At r = ([-+0-9.eE]+):\s*delta\(nll\) = ([-+0-9.eEnaif]+)")


def combine_searches(log_text: str) -> list[list[tuple[float, float]]]:
    """The ``(r, delta nll)`` points of each crossing search in a ``combine -v 2`` log: median
    (stepping), then exp-2, exp-1, exp+1, exp+2 (bisection), in Combine's order."""
    out: list[list[tuple[float, float]]] = []
    for line in log_text.splitlines():
        if "Will search for NLL crossing" in line:
            out.append([])
        m = _AT.search(line)
        if m and out:
            out[-1].append((float(m.group(1)), float(m.group(2))))
    return out


def failed_fits(points: list[tuple[float, float]], slack: float = 0.01) -> list[tuple[float, float]]:
    """Points of one search whose profiled delta(nll) exceeds that of a larger r by more than
    ``slack``: the profile likelihood rises with r, so such a point is a fit that did not converge
    (its bisection step then went the wrong way)."""
    pts = sorted(points)
    return [(r, d) for i, (r, d) in enumerate(pts) if any(d > d2 + slack for _, d2 in pts[i + 1:])]


def run_combine(card: str, workdir: str, rmax: float | None, env_script: str | None = None,
                extra: tuple[str, ...] = ()) -> dict:
    """Combine's expected limits of one card (``{"exp-2": .., ...}``), run in ``workdir``.

    Raises:
        RuntimeError: text2workspace.py or combine failed, or the limit tree is empty/incomplete
            (names the card and the log).
    """
    from svjscout.datacards.combine import missing_quantiles, read_limit_file

    os.makedirs(workdir, exist_ok=True)
    shutil.copy(card, os.path.join(workdir, "datacard.txt"))
    opts = [*TIGHT, *(["--rMax", repr(float(rmax))] if rmax else []), *extra]
    cmd = ("text2workspace.py datacard.txt -o workspace.root > text2workspace.log 2>&1 && "
           "combine -M AsymptoticLimits workspace.root -n .cmp -m 120 --run expected "
           + " ".join(shlex.quote(o) for o in opts) + " > combine.log 2>&1")
    if env_script:
        cmd = f"source {shlex.quote(env_script)} && {cmd}"
    r = subprocess.run(["bash", "-c", cmd], cwd=workdir, check=False)
    out = os.path.join(workdir, "higgsCombine.cmp.AsymptoticLimits.mH120.root")
    if r.returncode != 0 or not os.path.isfile(out):
        raise RuntimeError(f"Combine failed on {card} (exit {r.returncode}); see {workdir}/combine.log")
    lim = read_limit_file(out)
    lacking = missing_quantiles(lim)
    if lacking:
        raise RuntimeError(f"Combine gave no {', '.join(lacking)} for {card} (empty limit tree); "
                           f"see {workdir}/combine.log")
    with open(os.path.join(workdir, "combine.log"), errors="replace") as f:
        searches = combine_searches(f.read())
    order = ("exp0", "exp-2", "exp-1", "exp+1", "exp+2")
    bad = {k: failed_fits(pts) for k, pts in zip(order, searches)}
    return {**{k: lim[k] for k in KEYS}, "failed_fits": {k: v for k, v in bad.items() if v}}


def compare(cards_dir: str, env_script: str | None = None, keep: str | None = None, tol: float = 0.005,
            extra: tuple[str, ...] = (), rmax_factor: float = 5.3) -> tuple[list[dict], list[str]]:
    """Rows ``{point, quantile, quick, combine, rel_diff, capped, cap, ok}`` for every card and quantile,
    and the cards on which Combine failed (with the reason)."""
    from svjscout.datacards import card_limits
    from svjscout.datacards.limits import combine_band_caps, read_index

    _, cards = read_index(cards_dir)
    scratch = keep or tempfile.mkdtemp(prefix="compare_combine_")
    rows, failed = [], []
    for point, card in cards.items():
        quick = card_limits(card, observed=False)
        try:
            comb = run_combine(card, os.path.join(scratch, point), rmax_factor * quick["exp0"], env_script, extra)
            comb["rmax_factor"] = dict.fromkeys(KEYS, rmax_factor)
            # Combine's search path depends on rMax: where a search had a non-converged fit, rerun with
            # other rMax values and take that quantile from the first run whose search is clean
            for i, factor in enumerate(RETRY_FACTORS):
                if not comb["failed_fits"]:
                    break
                again = run_combine(card, os.path.join(scratch, f"{point}.retry{i + 1}"), factor * quick["exp0"],
                                    env_script, extra)
                for k in list(comb["failed_fits"]):
                    if k not in again["failed_fits"]:
                        comb[k], comb["rmax_factor"][k] = again[k], factor
                        del comb["failed_fits"][k]
        except RuntimeError as err:
            failed.append(str(err))
            continue
        caps = combine_band_caps(quick["exp0"])
        for k in KEYS:
            capped = k in quick["capped_by_combine"]
            ref = caps[k] if capped else quick[k]
            rel = comb[k] / ref - 1.0
            rows.append({"point": point, "quantile": k, "quick": quick[k], "combine": comb[k],
                         "rel_diff": comb[k] / quick[k] - 1.0, "capped": capped, "cap": caps.get(k),
                         "rel_diff_to_cap": rel if capped else None, "ok": abs(rel) <= tol,
                         "combine_failed_fits": comb["failed_fits"].get(k, []),
                         "combine_rmax_factor": comb["rmax_factor"][k],
                         "combine_rerun": comb["rmax_factor"][k] != rmax_factor})
    if keep is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows, failed


def table(rows: list[dict]) -> str:
    lines = [f"{'point':<26} {'quantile':<8} {'quick':>12} {'Combine':>12} {'rel. diff':>10}  cap binds",
             "-" * 86]
    for r in rows:
        cap = f"yes (cap {r['cap']:.5g}, Combine/cap - 1 = {r['rel_diff_to_cap']:+.2%})" if r["capped"] else "no"
        fails = r.get("combine_failed_fits") or []
        note = ("  Combine fit failed at " + ", ".join(f"r={x:.5g} (dNLL {d:.4g})" for x, d in fails)) if fails else ""
        if r.get("combine_rerun"):
            note += (f"  (Combine rerun with rMax = {r['combine_rmax_factor']:g} x median: "
                     "first search had a failed fit)")
        lines.append(f"{r['point']:<26} {r['quantile']:<8} {r['quick']:>12.6g} {r['combine']:>12.6g} "
                     f"{r['rel_diff']:>+10.3%}  {cap}{note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cards", help="DIR, DIR/datacards or index.json")
    ap.add_argument("--env", default=None,
                    help="setup script to source before Combine (e.g. /work/combine-build/env.sh)")
    ap.add_argument("--tol", type=float, default=0.005, help="relative tolerance on every uncapped quantile")
    ap.add_argument("--keep", default=None, help="keep Combine's work folders here (default: a temporary folder)")
    ap.add_argument("--rmax-factor", type=float, default=5.3,
                    help="--rMax = this x the quick median (not a round number: Combine's stepping search visits "
                         "multiples of rMax/20 and stops on one within its tolerance, which would then be ours)")
    ap.add_argument("--combine-opt", action="append", default=[], help="extra combine option (repeatable)")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if a.env is None and not (shutil.which("combine") and shutil.which("text2workspace.py")):
        print("combine / text2workspace.py not on PATH: give --env SETUP_SCRIPT", file=sys.stderr)
        return 2
    extra = tuple(o for opt in a.combine_opt for o in opt.split("=", 1))
    rows, failed = compare(a.cards, a.env, a.keep, a.tol, extra, a.rmax_factor)
    print(table(rows))
    unc = [r for r in rows if not r["capped"]]
    if unc:
        worst = max(unc, key=lambda r: abs(r["rel_diff"]))
        print(f"\nuncapped quantiles: {len(unc)}, max |rel. diff| {abs(worst['rel_diff']):.3%} "
              f"({worst['point']} {worst['quantile']}); tolerance {a.tol:.2%}")
    ncap = len(rows) - len(unc)
    if ncap:
        print(f"capped quantiles: {ncap} (Combine reports its bracket end; take those bands from toys)")
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        why = (" (Combine's own search had non-converged fits: its delta(nll) is not monotone in r)"
               if r["combine_failed_fits"] else "")
        print(f"OUTSIDE TOLERANCE: {r['point']} {r['quantile']}{why}", file=sys.stderr)
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "failed": failed, "tol": a.tol}, f, indent=1)
    return 2 if failed else (1 if bad else 0)


if __name__ == "__main__":
    sys.exit(main())
