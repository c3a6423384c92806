"""The settings of the statistics stages, one pydantic model per stage, passed whole.

* :class:`DatacardSettings` -- the card writer (:func:`.writer.write_datacards`), the job's
  ``datacards:`` block;
* :class:`ScanSettings` -- the working-point scan and its choice (:mod:`.scan`, :mod:`.choice`),
  the job's ``scan:`` block;
* :class:`ValidationSettings` -- the fit validation (:mod:`.validation`), the job's
  ``validation:`` block.

``svjscout run`` reads them from the job file; ``svjscout scan/datacards/validate`` start from the
run's job (its ``provenance.json``) or these defaults, plus ``--set KEY=VALUE``: every route has
the same defaults, defined here once (docs/config.md lists every key).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from svjscout.core.constants import LUMI_UNCERTAINTY

from .guard import Guard
from .scan import ScanRules

#: Injected signal strengths of the validation when none are given.
DEFAULT_INJECT = ("0", "1x", "2x")
NONCLOSURE_METHODS = ("continuous", "significance", "max", "sp", "vp", "quadrature", "vp_data")


def parse_inject(spec) -> list:
    """Injections from ``"0,1x,2x"`` (or a sequence of numbers / strings): a list of floats
    (absolute r) and ``("x", factor)`` tuples (factor times the point's median expected limit).

    ``None`` gives :data:`DEFAULT_INJECT`.

    Raises:
        ValueError: an entry that is neither a number, ``"Nx"`` nor ``"exp0"`` (names it).
    """
    if spec is None:
        spec = DEFAULT_INJECT
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    out: list[float | tuple[str, float]] = []
    for v in items:
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "x":
            out.append(("x", float(v[1])))
            continue
        if not isinstance(v, str):
            out.append(float(v))
            continue
        s = v.strip().lower()
        try:
            if s == "exp0":
                out.append(("x", 1.0))
            elif s.endswith("x"):
                out.append(("x", float(s[:-1])))
            else:
                out.append(float(s))
        except ValueError as err:
            raise ValueError(f"injection '{v}' is neither a number, 'Nx' (N times the expected limit) "
                             "nor 'exp0'") from err
    return out


#: Card formats per point (``DatacardSettings.formats``).
CardFormat = Literal["combine", "pyhf"]


class DatacardSettings(BaseModel):
    """The card writer's settings (the job's ``datacards:`` block; docs/config.md)."""

    model_config = ConfigDict(extra="forbid")

    asimov: bool = True
    unblind: bool = False  # asimov: false (data in the signal region) needs unblind: true
    lumi_unc: float = LUMI_UNCERTAINTY
    nonclosure_method: Literal["continuous", "significance", "max", "sp", "vp", "quadrature", "vp_data"] = "continuous"
    nonclosure_z: float = 2.0  # a non-closure beyond z sigma is significant (method significance)
    # the statistics guard (datacards/guard.py): every region of every fit bin (= closure bin)
    min_neff: float = Field(default=10.0, ge=0)  # Kish effective background MC events, parent-aware
    max_rel_err: float = Field(default=0.5, gt=0)  # relative MC error of the ABCD prediction per fit bin
    allow_unbacked: bool = False  # write cards/limits where the guard fails, stamped UNBACKED
    rateparam_range: tuple[float, float] = (0.1, 10.0)  # free background rateParams, initial 1
    zero_bkg: Literal["merge", "floor"] = "merge"  # too little background: merge M_T bins (guard), or floor only
    min_bkg: float = 0.0  # a region/bin needs background > min_bkg
    floor_value: float = 1e-3  # yield of a non-positive background after merging (events)
    plane: Literal["SP", "VP"] = "SP"  # the plane whose regions enter the fit
    signal_systematics: dict[str, float] = Field(default_factory=dict)  # extra lnN on the signal {name: kappa}
    # card formats per point: Combine's datacard.txt always; "pyhf" adds workspace.json (HistFactory JSON,
    # datacards/pyhf_export.py; needs the pyhf extra)
    formats: list[CardFormat] = Field(default_factory=lambda: list[CardFormat](["combine"]))
    # pseudo-data (datacards/pseudodata.py): observation drawn (Poisson, this seed) from the MC, plus
    # pseudo_inject x pseudo_signal (default: the first signal); cards stamped PSEUDO-DATA
    pseudo_data: int | None = None
    pseudo_inject: float = 0.0
    pseudo_signal: str | None = None

    @model_validator(mode="after")
    def _blinded_unless_asked(self):
        # refused when the job is loaded, not after the processing: data in region B of the
        # signal plane is looked at only on purpose
        if not self.asimov and not self.unblind:
            raise ValueError("asimov: false puts data into region B of the signal plane (unblinding); "
                             "set datacards.unblind: true to do that on purpose")
        return self

    @property
    def guard(self) -> Guard:
        """The statistics guard of the cards (:mod:`.guard`)."""
        return Guard(self.min_neff, self.max_rel_err)


class ScanSettings(BaseModel):
    """The working-point scan and its choice (the job's ``scan:`` block; docs/config.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    x_range: tuple[float, float] = (0.1, 0.9)
    y_range: tuple[float, float] = (0.1, 0.9)
    points: int = Field(default=33, ge=1)
    reference: str | None = None
    p_min: float = 0.05  # closure chi2 p-value rule (the design's 0.9 with plateau: docs/datacards.md)
    plateau: bool = False
    fom_nonclosure: bool = True  # <Z_A> with the cards' non-closure in sigma_b
    delta_max: float = 0.05  # maximum significant |non-closure| per M_T bin
    pull_max: float = 2.0  # maximum |closure pull| per M_T bin
    r_max: float = 0.35  # maximum signal contamination ratio
    split: bool = True  # choose on one half of the MC (split by parent), quote on the other (datacards/split.py)
    split_seed: int = 0
    # parents: the halves by a hash of the parent key; subsets: the run's two event subsets
    # (analysis.event_subset: [select, final]), chosen on the first, quoted on the second
    split_on: Literal["parents", "subsets"] = "parents"

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """The scanned thresholds ``(xs, ys)``."""
        return np.linspace(*self.x_range, self.points), np.linspace(*self.y_range, self.points)

    def rules(self, cards: DatacardSettings) -> ScanRules:
        """The scan's rules; its statistics guard and non-closure are the cards' (``cards``)."""
        return ScanRules(p_min=self.p_min, plateau=self.plateau, delta_max=self.delta_max, pull_max=self.pull_max,
                         r_max=self.r_max, fom_nonclosure=self.fom_nonclosure, min_neff=cards.min_neff,
                         max_rel_err=cards.max_rel_err, nonclosure_z=cards.nonclosure_z)


class ValidationSettings(BaseModel):
    """Fit validation of the cards (the job's ``validation:`` block; ``svjscout validate``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    toys: int = Field(default=20, ge=2)  # per injected r and per goodness of fit; raise it for a review
    # injected r: numbers, or "Nx" = N times the point's median expected limit ("exp0" = "1x")
    inject: list[float | str] = list(DEFAULT_INJECT)
    seed: int = 1
    stability: bool = True  # closure and expected limit at the 8 neighbours of the WP

    @model_validator(mode="after")
    def _injections_parse(self):
        # refused at load, naming the entry, not after the processing
        parse_inject(self.inject)
        return self

