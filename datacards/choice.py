"""The run's working point and the verdict on it: chosen on one half of the MC, quoted on the other.

:func:`choose_working_point` is what ``svjscout run`` (and ``svjscout datacards --scan``) does:

1. with the scan: split the MC by parent (:mod:`.split`), scan the ``select`` half, take its
   choice; without it: the configured working point;
2. evaluate every rule of the scan (the statistics guard included) at that point on the
   ``quote`` half (the full sample for a configured point, or when the MC cannot be split):
   those are the figures the run quotes, and the cards are written from that histogram;
3. the verdict: *backed* when the point passes every rule, guard included, on the events it is
   quoted on, and (with the scan) was a passing choice on the events it was chosen on; every
   reason it is not is kept, in words, for the cards, ``limits.json``, ``summary.md`` and the figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from svjscout.core.exceptions import HistogramError

from .guard import UNBACKED
from .parents import StatInputs
from .scan import RULE_COLUMNS, ScanResult, ScanRules, scan_working_points
from .split import split_halves

log = logging.getLogger(__name__)

RULE_WORDS = {"pass_guard": "statistics guard", "pass_pvalue": "closure p-value", "pass_delta": "per-bin non-closure",
              "pass_pull": "per-bin closure pull", "pass_rmax": "signal contamination", "in_bounds": "within bounds"}


@dataclass
class WorkingPointChoice:
    """What :func:`choose_working_point` decided, and on which events.

    Attributes:
        wp: ``(x0, y0)``.
        source: how it was chosen, in words.
        scan: the scan (of the ``select`` half when split, else of the whole sample).
        row: the scan's metrics at ``wp`` on the events the run quotes (dict).
        inputs: the statistics inputs (``xy_mt`` and its parent records) the cards, closure and
            limits are made from (:class:`.parents.StatInputs`).
        split: True when the working point was chosen on the other half of the MC.
        reasons: why the point is not backed (empty: backed).
        caveats: facts a reader needs that do not make it unbacked.
    """

    wp: tuple[float, float]
    source: str
    scan: ScanResult
    row: dict
    inputs: StatInputs
    split: bool
    reasons: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)

    @property
    def backed(self) -> bool:
        return not self.reasons

    def verdict(self) -> str:
        if self.backed:
            where = " (chosen on the MC's 'select' subset)" if "'select' subset" in self.source else \
                " (chosen on the other half of the MC)"
            return ("backed: the working point passes every rule, the statistics guard included, on the events its "
                    "figures are quoted on" + (where if self.split else ""))
        return f"{UNBACKED}: " + "; ".join(self.reasons)


def _row(scan: ScanResult, wp) -> dict:
    t = scan.table
    sel = t[np.isclose(t["x0"], wp[0]) & np.isclose(t["y0"], wp[1])]
    if sel.empty:
        raise HistogramError(f"working point {wp} is not on the scan grid")
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in sel.iloc[0].to_dict().items()}


def failed_rules(row: Mapping) -> list[str]:
    """The rules a scan row fails, in words (with the guard's reasons)."""
    out = []
    for c in RULE_COLUMNS:
        if not bool(row.get(c, True)):
            word = RULE_WORDS[c]
            if c == "pass_guard" and row.get("guard"):
                word += f" ({row['guard']})"
            elif c == "pass_pvalue":
                word += f" (p = {row.get('pvalue', float('nan')):.3g})"
            elif c == "pass_delta":
                word += f" (max significant |delta_i| = {row.get('delta_sig_bins', float('nan')):.3g})"
            elif c == "pass_pull":
                word += f" (max |pull_i| = {row.get('pull_bins', float('nan')):.3g})"
            elif c == "pass_rmax":
                word += f" (r_max = {row.get('r_max', float('nan')):.3g})"
            out.append(word)
    return out


def choose_working_point(output: Mapping, rules: ScanRules, grid=None, reference: str | None = None,
                         use_scan: bool = True, configured=(0.5, 0.5), split: bool = True,
                         seed: int = 0, subsets: Mapping[str, tuple[int, float]] | None = None) -> WorkingPointChoice:
    """Scan (on one half), pick, evaluate on the events quoted; see the module docstring.

    Args:
        output: the processor output with ``hists.xy_mt``, ``datasets`` and (for the split)
            ``parent_fills`` (the parent records, for parent-aware variances and the split).
        rules: the scan's rules (their guard is the cards').
        grid, reference: as :func:`.scan.scan_working_points`.
        use_scan: take the scan's choice (else ``configured``).
        split: choose on half ``select`` and quote on half ``quote`` (only with ``use_scan``).
        seed: the split's seed.
        subsets: split by the run's two event subsets instead (:func:`.split.subset_halves`: chosen
            on the first, quoted on the second; an output that cannot be split so is refused).
    """
    full, datasets = StatInputs.from_output(output), output["datasets"]
    caveats: list[str] = []
    halves = None
    if use_scan and split and subsets is not None:  # the job asked for these subsets: no fallback
        halves = split_halves(output, subsets=subsets)
    elif use_scan and split:
        try:
            halves = split_halves(output, seed=seed)
        except HistogramError as err:
            caveats.append(f"the MC could not be split by parent ({err}); the working point is chosen and quoted on "
                           "the same events, so its figures are biased high")
    elif use_scan:
        caveats.append("scan.split is off: the working point is chosen and quoted on the same events, so its "
                       "figures (<Z_A>, closure, limits) are biased high")
    if halves is not None:
        scan = scan_working_points(StatInputs.from_output(halves["select"]), datasets, grid=grid,
                                   reference=reference, rules=rules)
        scan.sample = "the 'select' subset of the MC" if subsets is not None else "half 'select' of the MC"
        quote = StatInputs.from_output(halves["quote"])
    else:  # without use_scan the scan is for the record only: its choice is not the run's, no warning about it
        scan = scan_working_points(full, datasets, grid=grid, reference=reference, rules=rules, quiet=not use_scan)
        quote = full
    reasons: list[str] = []
    if use_scan:
        wp = tuple(float(v) for v in scan.best)
        if scan.fallback:
            reasons.append("no working point passes every rule on the events it is chosen on (the scan's choice is "
                           f"a fallback: {'; '.join(failed_rules(_row(scan, wp))) or 'see scan_best.json'})")
        if subsets is not None:
            source = "grid scan choice on the MC's 'select' subset, figures on its 'final' subset (split by parent)"
        elif halves is not None:
            source = "grid scan choice on half 'select' of the MC (split by parent), figures on half 'quote'"
        else:
            source = "grid scan choice"
    else:
        wp = tuple(float(v) for v in configured)
        source = "configured (analysis.wp)"
    quoted = scan_working_points(quote, datasets, grid=([wp[0]], [wp[1]]), reference=reference, rules=rules,
                                 quiet=True)
    row = _row(quoted, wp)
    fails = failed_rules(row)
    if fails:
        where = "on the half it is quoted on" if halves is not None else "on the MC"
        reasons.append(f"at ({wp[0]:.3f}, {wp[1]:.3f}) it fails {where}: " + "; ".join(fails))
    choice = WorkingPointChoice(wp, source, scan, row, quote, halves is not None, reasons, caveats)
    (log.info if choice.backed else log.warning)("working point (%.3f, %.3f): %s", wp[0], wp[1], choice.verdict())
    return choice
