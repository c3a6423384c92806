"""Parser and validator of Combine text datacards (counting-experiment subset + rateParams).

The parser is tolerant: it records what it reads (counts, rows, systematics, rateParams) without
judging it, so :func:`validate_datacard` can list every problem Combine would reject, each naming
the bin, process or parameter at fault:

* ``imax``/``jmax``/``kmax`` inconsistent with the bins, processes and nuisances found
  (``*`` is accepted; rateParam, autoMCStats, group, extArg, nuisance-edit lines are not counted);
* column-count mismatches (observation vs bins, the four process rows, each systematic row);
* duplicate names (bins, (bin, process) columns, systematics, rateParam defined twice on the same
  bin/process, rateParam name clashing with a systematic, one process with two indices);
* rateParams on unknown bins or processes, formula rateParams with unknown arguments or ``@i``
  out of range, rateParams on processes whose rate is zero;
* non-numeric or negative rates/observations, lnN values <= 0.

Example:
    >>> # card = parse_datacard("out/datacards/svj_mz2000_rinv0.3/datacard.txt")
    >>> # validate_datacard(card)   # raises DatacardError listing every problem
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field

from svjscout.core.exceptions import DatacardError

log = logging.getLogger(__name__)

NUISANCE_TYPES = {"lnN", "lnU", "gmN", "shape", "shapeN", "shapeN2", "shapeU", "shape?", "param", "trG", "unif",
                  "dFD", "dFD2", "constr"}
NOT_COUNTED = {"rateParam", "autoMCStats", "group", "extArg", "nuisance", "flatParam", "discrete", "sumGroup",
               "paramLnN"}
_FORMULA_CHARS = re.compile(r"^[\s0-9@.+\-*/(),eE]*$")
FORMULA_FUNCS = ("exp", "log", "sqrt", "pow", "min", "max")


def formula_ok(formula: str) -> bool:
    """True if a rateParam formula uses only numbers, ``@i``, + - * / ( ) , and exp/log/sqrt/pow/min/max."""
    return bool(_FORMULA_CHARS.match(re.sub(r"\b(" + "|".join(FORMULA_FUNCS) + r")\b", "", formula)))


@dataclass
class Systematic:
    """A systematics row: ``name type [N] values...`` (values as strings, ``-`` = none)."""

    name: str
    type: str
    values: list[str]
    line: int
    extra: list[str] = field(default_factory=list)


@dataclass
class RateParam:
    """``name rateParam bin process value [lo,hi]`` or ``name rateParam bin process formula args``."""

    name: str
    bin: str
    process: str
    value: float | None
    formula: str | None
    args: list[str]
    range: tuple[float, float] | None
    line: int

    @property
    def is_formula(self) -> bool:
        return self.formula is not None


@dataclass
class Datacard:
    """Parsed datacard.

    Attributes:
        path: source file (or "<string>").
        imax, jmax, kmax: declared counts (None for ``*`` or absent).
        bins: channel names of the observation block, observation: their counts.
        col_bins, col_procs, col_ids, col_rates: the four process rows as read (strings for ids
            and rates so that malformed values can be reported).
        systematics: nuisance rows; rate_params: rateParam rows; other: other rows kept verbatim.
        comments: comment lines (without ``#``); errors: problems met while reading.
    """

    path: str
    imax: int | None = None
    jmax: int | None = None
    kmax: int | None = None
    bins: list[str] = field(default_factory=list)
    observation: list[str] = field(default_factory=list)
    col_bins: list[str] = field(default_factory=list)
    col_procs: list[str] = field(default_factory=list)
    col_ids: list[str] = field(default_factory=list)
    col_rates: list[str] = field(default_factory=list)
    systematics: list[Systematic] = field(default_factory=list)
    rate_params: list[RateParam] = field(default_factory=list)
    other: list[list[str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def processes(self) -> list[str]:
        """Distinct process names in column order."""
        return list(dict.fromkeys(self.col_procs))

    @property
    def ncols(self) -> int:
        return len(self.col_bins)

    def obs(self) -> dict[str, float]:
        """``{bin: observation}`` (raises DatacardError on non-numeric values)."""
        return {b: _num(o, f"observation of bin '{b}'") for b, o in zip(self.bins, self.observation)}

    def rate(self, bin: str, process: str) -> float:
        """Rate of ``process`` in ``bin``."""
        for b, p, r in zip(self.col_bins, self.col_procs, self.col_rates):
            if b == bin and p == process:
                return _num(r, f"rate of process '{p}' in bin '{b}'")
        raise DatacardError(f"no column for process '{process}' in bin '{bin}'")

    def systematic(self, name: str) -> Systematic:
        for s in self.systematics:
            if s.name == name:
                return s
        raise DatacardError(f"no systematic named '{name}'")

    def rate_param(self, name: str, bin: str | None = None) -> RateParam:
        for rp in self.rate_params:
            if rp.name == name and (bin is None or rp.bin == bin):
                return rp
        raise DatacardError(f"no rateParam named '{name}'" + (f" in bin '{bin}'" if bin else ""))


def _num(s: str, what: str) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        raise DatacardError(f"{what} is '{s}', not a number") from None


def _count(tok: list[str], key: str, card: Datacard, ln: int) -> int | None:
    if len(tok) < 2 or tok[1] == "*":
        return None
    try:
        return int(tok[1])
    except ValueError:
        card.errors.append(f"line {ln}: {key} '{tok[1]}' is not an integer or '*'")
        return None


def parse_text(text: str, path: str = "<string>") -> Datacard:
    """Parse datacard text (see :func:`parse_datacard`)."""
    card = Datacard(path=path)
    seen_obs = False
    proc_rows = 0
    for ln, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            card.comments.append(line[1:].strip())
            continue
        if line.startswith("-"):
            continue
        tok = line.split()
        key = tok[0]
        if key in ("imax", "jmax", "kmax"):
            setattr(card, key, _count(tok, key, card, ln))
        elif key == "bin" and not seen_obs and not card.bins:
            card.bins = tok[1:]
        elif key == "observation":
            card.observation = tok[1:]
            seen_obs = True
        elif key == "bin":
            card.col_bins = tok[1:]
        elif key == "process":
            if proc_rows == 0:
                card.col_procs = tok[1:]
            else:
                card.col_ids = tok[1:]
            proc_rows += 1
        elif key == "rate":
            card.col_rates = tok[1:]
        elif key == "shapes":
            card.other.append(tok)
        elif len(tok) >= 2 and tok[1] == "rateParam":
            card.rate_params.append(_parse_rateparam(tok, ln, card))
        elif len(tok) >= 2 and tok[1] in NUISANCE_TYPES:
            if tok[1] == "gmN" and len(tok) >= 3:
                card.systematics.append(Systematic(tok[0], tok[1], tok[3:], ln, extra=[tok[2]]))
            elif tok[1] == "param":
                card.systematics.append(Systematic(tok[0], tok[1], [], ln, extra=tok[2:]))
            else:
                card.systematics.append(Systematic(tok[0], tok[1], tok[2:], ln))
        else:
            card.other.append(tok)
    # the first "process" row may be the numeric one: Combine accepts either order
    if (card.col_procs and card.col_ids and all(_isint(t) for t in card.col_procs)
            and not all(_isint(t) for t in card.col_ids)):
        card.col_procs, card.col_ids = card.col_ids, card.col_procs
    return card


def _isint(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _parse_rateparam(tok: list[str], ln: int, card: Datacard) -> RateParam:
    name = tok[0]
    if len(tok) < 5:
        card.errors.append(f"line {ln}: rateParam '{name}' needs 'name rateParam bin process value', got {len(tok)} "
                           f"fields")
        return RateParam(name, tok[2] if len(tok) > 2 else "?", tok[3] if len(tok) > 3 else "?", None, None, [], None,
                         ln)
    b, p, v = tok[2], tok[3], tok[4]
    rest = tok[5:]
    try:
        value = float(v)
    except ValueError:
        args = rest[0].split(",") if rest else []
        return RateParam(name, b, p, None, v, args, None, ln)
    rng = None
    if rest:
        m = re.match(r"^\[\s*([^,\]]+)\s*,\s*([^\]]+)\s*\]$", "".join(rest))
        if m:
            try:
                rng = (float(m.group(1)), float(m.group(2)))
            except ValueError:
                card.errors.append(f"line {ln}: rateParam '{name}' range '{''.join(rest)}' is not numeric")
        else:
            card.errors.append(f"line {ln}: rateParam '{name}' range '{''.join(rest)}' is not '[lo,hi]'")
    return RateParam(name, b, p, value, None, [], rng, ln)


def parse_datacard(path: str | os.PathLike) -> Datacard:
    """Parse a Combine text datacard.

    Args:
        path: card file.

    Returns:
        :class:`Datacard` (use :func:`validate_datacard` to check it).

    Raises:
        DatacardError: if the file cannot be read.
    """
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise DatacardError(f"cannot read datacard '{path}': {exc}") from exc
    return parse_text(text, os.fspath(path))


def check_datacard(card: Datacard) -> list[str]:
    """List every problem of a parsed card (empty list = fine); see the module docstring."""
    prob = list(card.errors)
    nb, nc = len(card.bins), card.ncols
    # counts
    if card.imax is not None and card.imax != nb:
        prob.append(f"imax is {card.imax} but {nb} bins are declared in the observation block")
    if len(card.observation) != nb:
        prob.append(f"observation has {len(card.observation)} values but {nb} bins are declared")
    procs = card.processes
    if card.jmax is not None and card.jmax != len(procs) - 1:
        prob.append(f"jmax is {card.jmax} but {len(procs)} processes are declared ({procs}), expected jmax "
                    f"{len(procs) - 1}")
    nuis = card.systematics  # Combine counts every nuisance row (lnN, shape, param, ...), not rateParams
    if card.kmax is not None and card.kmax != len(nuis):
        prob.append(f"kmax is {card.kmax} but {len(nuis)} nuisance parameters are declared ({[s.name for s in nuis]})")
    for label, row in (("process (names)", card.col_procs), ("process (indices)", card.col_ids),
                       ("rate", card.col_rates)):
        if len(row) != nc:
            prob.append(f"'{label}' row has {len(row)} columns but the 'bin' row has {nc}")
    # duplicates
    for b in sorted({b for b in card.bins if card.bins.count(b) > 1}):
        prob.append(f"bin '{b}' is declared {card.bins.count(b)} times in the observation block")
    cols = list(zip(card.col_bins, card.col_procs))
    for b, p in sorted({c for c in cols if cols.count(c) > 1}):
        prob.append(f"process '{p}' appears {cols.count((b, p))} times in bin '{b}'")
    names = [s.name for s in card.systematics]
    for n in sorted({n for n in names if names.count(n) > 1}):
        prob.append(f"systematic '{n}' is declared {names.count(n)} times")
    rps = [(rp.name, rp.bin, rp.process) for rp in card.rate_params]
    for n, b, p in sorted({r for r in rps if rps.count(r) > 1}):
        prob.append(f"rateParam '{n}' is declared {rps.count((n, b, p))} times for process '{p}' in bin '{b}'")
    for n in sorted({rp.name for rp in card.rate_params} & {s.name for s in card.systematics if s.type != "param"}):
        prob.append(f"rateParam '{n}' has the same name as a systematic")
    ids: dict[str, set[str]] = {}
    for p, i in zip(card.col_procs, card.col_ids):
        ids.setdefault(p, set()).add(i)
    for p, s in ids.items():
        if len(s) > 1:
            prob.append(f"process '{p}' has several indices {sorted(s)}")
    by_id: dict[str, set[str]] = {}
    for p, i in zip(card.col_procs, card.col_ids):
        by_id.setdefault(i, set()).add(p)
    for i, s in by_id.items():
        if len(s) > 1:
            prob.append(f"process index {i} is used by several processes {sorted(s)}")
    for i in ids:
        for v in ids[i]:
            if not _isint(v):
                prob.append(f"process '{i}' has a non-integer index '{v}'")
    # bins of columns
    for b in sorted(set(card.col_bins) - set(card.bins)):
        prob.append(f"bin '{b}' has process columns but no observation")
    for b in sorted(set(card.bins) - set(card.col_bins)):
        prob.append(f"bin '{b}' has an observation but no process column")
    # values
    for b, o in zip(card.bins, card.observation):
        try:
            if float(o) < 0:
                prob.append(f"observation of bin '{b}' is negative ({o})")
        except ValueError:
            prob.append(f"observation of bin '{b}' is '{o}', not a number")
    rates: dict[tuple[str, str], float] = {}
    for b, p, r in zip(card.col_bins, card.col_procs, card.col_rates):
        try:
            rates[(b, p)] = float(r)
            if float(r) < 0:
                prob.append(f"rate of process '{p}' in bin '{b}' is negative ({r})")
        except ValueError:
            prob.append(f"rate of process '{p}' in bin '{b}' is '{r}', not a number")
    for s in card.systematics:
        if s.type in ("param",):
            continue
        if len(s.values) != nc:
            prob.append(f"systematic '{s.name}' ({s.type}) has {len(s.values)} values but there are {nc} columns")
        if s.type == "lnN":
            for (b, p), v in zip(cols, s.values):
                if v == "-":
                    continue
                try:
                    ks = [float(x) for x in v.split("/")]
                    if any(k <= 0 for k in ks) or len(ks) > 2:
                        prob.append(f"systematic '{s.name}' has invalid lnN value '{v}' for process '{p}' in bin '{b}'")
                except ValueError:
                    prob.append(f"systematic '{s.name}' has non-numeric value '{v}' for process '{p}' in bin '{b}'")
        if s.type == "gmN":
            prob.extend(_check_gmn(s, cols, rates))
    # rateParams
    allnames = {rp.name for rp in card.rate_params} | {s.name for s in card.systematics}
    for rp in card.rate_params:
        tb = [b for b in card.bins if fnmatch.fnmatchcase(b, rp.bin)] if any(c in rp.bin for c in "*?[") else (
            [rp.bin] if rp.bin in card.bins or rp.bin in card.col_bins else [])
        if not tb:
            prob.append(f"rateParam '{rp.name}' refers to unknown bin '{rp.bin}'")
            continue
        hits = [(b, p) for (b, p) in cols if b in tb and fnmatch.fnmatchcase(p, rp.process)]
        if not hits:
            prob.append(f"rateParam '{rp.name}' refers to process '{rp.process}' which is not in bin '{rp.bin}'")
        for b, p in hits:
            if rates.get((b, p)) == 0.0:
                prob.append(f"rateParam '{rp.name}' multiplies process '{p}' in bin '{b}' whose rate is 0 (Combine "
                            f"drops it)")
        if rp.is_formula:
            if not formula_ok(rp.formula or ""):
                prob.append(f"rateParam '{rp.name}' has an unsupported formula '{rp.formula}'")
            refs = [int(i) for i in re.findall(r"@(\d+)", rp.formula or "")]
            for i in refs:
                if i >= len(rp.args):
                    prob.append(f"rateParam '{rp.name}' formula uses @{i} but has only {len(rp.args)} argument(s)")
            for a in rp.args:
                if a not in allnames:
                    prob.append(f"rateParam '{rp.name}' formula argument '{a}' is not a defined parameter")
        elif rp.range is not None and not (rp.range[0] <= rp.value <= rp.range[1]):
            prob.append(f"rateParam '{rp.name}' initial value {rp.value:g} is outside its range {list(rp.range)}")
    return prob


def _check_gmn(s: Systematic, cols: list[tuple[str, str]], rates: dict) -> list[str]:
    """Problems of a ``name gmN N alpha...`` row, with Combine's rule (``ModelTools.py``, v10.6.0) that
    each rate equals ``alpha * N`` within ``max(0.05 max(rate, 1), alpha)``."""
    prob = []
    n_txt = s.extra[0] if s.extra else ""
    if not _isint(n_txt) or int(n_txt) < 0:
        return [f"systematic '{s.name}' (gmN) needs a non-negative integer count N, got '{n_txt}'"]
    n = int(n_txt)
    for (b, p), v in zip(cols, s.values):
        if v == "-":
            continue
        try:
            alpha = float(v)
        except ValueError:
            prob.append(f"systematic '{s.name}' has non-numeric gmN alpha '{v}' for process '{p}' in bin '{b}'")
            continue
        if alpha < 0:
            prob.append(f"systematic '{s.name}' has negative gmN alpha '{v}' for process '{p}' in bin '{b}'")
        elif (alpha > 0 and (b, p) in rates
              and abs(alpha * n - rates[(b, p)]) > max(0.05 * max(rates[(b, p)], 1.0), alpha)):
            prob.append(f"systematic '{s.name}' (gmN N = {n}, alpha = {v}) does not match the rate {rates[(b, p)]:g} "
                        f"of "
                        f"process '{p}' in bin '{b}' (Combine needs rate = N * alpha)")
    return prob


def validate_datacard(path_or_parsed, raise_on_error: bool = True) -> list[str]:
    """Validate a datacard the way Combine would.

    Args:
        path_or_parsed: card path or :class:`Datacard`.
        raise_on_error: raise :class:`DatacardError` listing every problem (default), else return them.

    Returns:
        list of problems (empty when valid).

    Raises:
        DatacardError: if problems are found and ``raise_on_error``; the message lists each problem
            naming the bin, process or parameter.
    """
    card = path_or_parsed if isinstance(path_or_parsed, Datacard) else parse_datacard(path_or_parsed)
    prob = check_datacard(card)
    if prob and raise_on_error:
        raise DatacardError(f"datacard {card.path} has {len(prob)} problem(s):\n  - " + "\n  - ".join(prob))
    return prob
