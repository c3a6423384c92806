"""Settings of the processor: datasets, the event subset, the analysis block, the processor config.

:class:`AnalysisSettings` is the ``analysis`` block of a job file; :class:`ProcessorConfig` adds
what the processor needs to know of the run (each dataset's kind, cross section and sum of
weights as :class:`DatasetInfo`, the branch mapping, the skim folder). Both are pydantic models,
checked when built: a job's faults are refused before any file is read.
"""

from __future__ import annotations

from typing import Literal

import hist
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from svjscout.core import splits
from svjscout.core.constants import LUMI_RUN2_PB
from svjscout.core.cuts import Cuts
from svjscout.core.exceptions import ConfigError
from svjscout.processors import histograms as H
from svjscout.processors.corrections.pog import CorrectionsSettings
from svjscout.processors.dataquality import DataQualitySettings
from svjscout.processors.schema import BranchMap
from svjscout.processors.variations import SystematicsSettings

__all__ = ["DatasetInfo", "EventSubset", "AnalysisSettings", "ProcessorConfig", "check_event_subset"]


class DatasetInfo(BaseModel):
    """What the processor needs to know about a dataset."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["signal", "background", "data"]
    xsec: float | None = None  # pb
    sumw: float | None = None  # sum of genWeight over all generated events of the dataset
    mzprime: float | None = None
    rinv: float | None = None

    @property
    def is_mc(self) -> bool:
        return self.kind != "data"

    def norm(self, lumi: float) -> float:
        """xsec * lumi / sumw for MC (lumi in pb^-1), 1 for data."""
        if not self.is_mc:
            return 1.0
        if not self.xsec or not self.sumw:
            raise ConfigError(f"MC dataset needs xsec and sumw > 0, got xsec={self.xsec}, sumw={self.sumw}")
        return self.xsec * lumi / self.sumw


def _names_four_way(names) -> bool:
    """Whether subset names without fractions mean the 4-way split (a name only it has)."""
    return any(n in ("select", "final") for n in names)


class EventSubset(BaseModel):
    """``analysis.event_subset``: process one or several subsets of the shared event split.

    The split is :mod:`svjscout.core.splits` (the one both trainers use): ``seed`` and
    ``fractions`` must be those the models were trained with to select their held-out events.
    Two splits of the same ``u``:

    * 3-way (LundNet; the shipped twin): names ``train``, ``val``, ``test``, ``fractions`` =
      (train, val, test), default :data:`~svjscout.core.splits.DEFAULT_FRACTIONS`;
    * 4-way (the twin of issue 29): names ``train``, ``val``, ``select``, ``final``, ``fractions`` =
      (train, val, select, final), default :data:`~svjscout.core.splits.DEFAULT_FRACTIONS4`.

    The split is 4-way when ``fractions`` has 4 entries, or, without ``fractions``, when a name is
    ``select`` or ``final``. ``subset`` is one name or a list: ``[select, final]`` with
    ``scan.split_on: subsets`` chooses the working point on the twin's ``select`` events and quotes
    every figure on its untouched ``final`` events (docs/training_data.md).
    """

    model_config = ConfigDict(extra="forbid")

    # fractions before subset: the names are checked against the split the fractions give
    seed: int = splits.DEFAULT_SEED
    fractions: tuple[float, ...] | None = None
    subset: str | list[str]

    @field_validator("fractions")
    @classmethod
    def _fractions_valid(cls, v):
        if v is None:
            return v
        if len(v) not in (3, 4):
            raise ValueError(f"fractions {list(v)}: expected 3 (train, val, test) or 4 (train, val, select, final)")
        if any(not (0 < f < 1) for f in v):
            raise ValueError(f"fractions {list(v)} must each be in (0, 1)")
        if abs(sum(v) - 1) > 1e-6:
            raise ValueError(f"fractions {list(v)} must sum to 1 (sum {sum(v):.6g})")
        return v

    @field_validator("subset")
    @classmethod
    def _names_valid(cls, v, info):
        names = [v] if isinstance(v, str) else list(v)
        if not names:
            raise ValueError("expected a subset name or a non-empty list of names")
        if len(set(names)) != len(names):
            raise ValueError(f"{names} names a subset twice")
        if "fractions" not in info.data:  # the fractions were refused: their error says why
            return v
        fr = info.data["fractions"]
        four = len(fr) == 4 if fr is not None else _names_four_way(names)
        allowed = splits.SPLIT4_NAMES if four else splits.SPLIT_NAMES
        bad = [n for n in names if n not in allowed]
        if bad:
            why = f"fractions {list(fr)}" if fr is not None else "no fractions given"
            raise ValueError(f"{bad}: the {4 if four else 3}-way split ({why}) has the subsets {list(allowed)}")
        return v

    @model_validator(mode="after")
    def _default_fractions(self):
        if self.fractions is None:
            self.fractions = splits.DEFAULT_FRACTIONS4 if _names_four_way(self.names) else splits.DEFAULT_FRACTIONS
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The subset names, in the order given."""
        return (self.subset,) if isinstance(self.subset, str) else tuple(self.subset)

    @property
    def four_way(self) -> bool:
        """Whether the split is the 4-way one (train, val, select, final)."""
        return len(self.fractions) == 4 if self.fractions is not None else _names_four_way(self.names)

    @property
    def split_names(self) -> tuple[str, ...]:
        """The subsets of the split, in the order of ``fractions``."""
        return splits.SPLIT4_NAMES if self.four_way else splits.SPLIT_NAMES

    @property
    def codes(self) -> tuple[int, ...]:
        """The subsets' codes in :mod:`svjscout.core.splits` (``SUBSET_NAMES[code]`` is the name)."""
        return tuple(self.code_of(n) for n in self.names)

    @property
    def code(self) -> int:
        """The code of the one subset (a ``ConfigError`` when ``subset`` lists several)."""
        if len(self.names) != 1:
            raise ConfigError(f"analysis.event_subset lists {list(self.names)}: no single code")
        return self.codes[0]

    def code_of(self, name: str) -> int:
        """The code of subset ``name`` of this split."""
        return splits.SUBSET_NAMES.index(name)

    def fraction_of(self, name: str) -> float:
        """The expected fraction of events in subset ``name``."""
        assert self.fractions is not None  # resolved at validation
        return float(self.fractions[self.split_names.index(name)])

    @property
    def fraction(self) -> float:
        """The expected fraction of events in the subsets (MC yields are scaled by its inverse)."""
        return float(sum(self.fraction_of(n) for n in self.names))

    def codes_of(self, dataset, run, lumi, parent) -> np.ndarray:
        """The split's subset code (int8) of every event from its key (:func:`splits.split_of` or
        :func:`splits.split4_of`)."""
        assert self.fractions is not None
        if self.four_way:
            return splits.split4_of(dataset, run, lumi, parent, self.seed, self.fractions)
        return splits.split_of(dataset, run, lumi, parent, self.seed, self.fractions)

    def describe(self) -> str:
        """``'select' + 'final' subsets of the 4-way split (seed 1, fractions [...])``, for reports."""
        what = " + ".join(f"`{n}`" for n in self.names)
        plural = "subsets" if len(self.names) > 1 else "subset"
        kind = "train/val/select/final" if self.four_way else "train/val/test"
        return f"the {what} {plural} of the {kind} split (seed {self.seed}, fractions {list(self.fractions or ())})"


def check_event_subset(subset: EventSubset | None, kinds: dict[str, str]) -> None:
    """Refuse ``analysis.event_subset`` with a data dataset (``kinds``: dataset -> kind)."""
    data = sorted(name for name, kind in kinds.items() if kind == "data")
    if subset is not None and data:
        raise ConfigError(f"analysis.event_subset ({subset.subset!r}) selects MC events of the training split; "
                          f"dataset(s) {data} are data (kind: data): run them in a job without event_subset")


class AnalysisSettings(BaseModel):
    """Cuts, binning, working point, models and luminosity (the ``analysis`` block of a job).

    ``batch_events``: events of a chunk read and processed at a time (>= 0; 0: the whole chunk).
    ``data_quality``: the data-quality stages (:class:`~svjscout.processors.dataquality.DataQualitySettings`:
    ``era``, ``trigger``, ``vertex``, ``hem``, ``phi_spike``, ``jet_id``, ``chs``; docs/dataquality.md);
    the defaults pass every event of files without trigger bits, vertices and vertex indices.
    """

    model_config = ConfigDict(extra="forbid")

    cuts: Cuts = Field(default_factory=Cuts)
    mt_edges: list[float] = [650.0, 800.0, 1000.0, 1300.0, 1700.0, 2500.0]
    wp: tuple[float, float] = (0.775, 0.875)
    score_bins: int = 40
    lund_max_len: int = 32
    prefilter: bool = True  # skip the clustering of events proven to fail the preselection
    # events read and processed at a time within a chunk (0: the whole chunk at once); bounds a
    # worker's memory for large chunks (docs/performance.md: 5,000 keeps a worker under 1 GB at
    # 50,000-100,000-event chunks of Run-3 ScoutingNano, ~1,200 PF candidates per event); the output
    # is bit-identical either way
    batch_events: int = 5000
    systematics: SystematicsSettings = Field(default_factory=SystematicsSettings)  # processors/variations.py
    corrections: CorrectionsSettings = Field(default_factory=CorrectionsSettings)  # docs/corrections.md
    lundnet_model: str | None = None
    twin_model: str | None = None
    lumi: float = LUMI_RUN2_PB  # pb^-1
    event_subset: EventSubset | None = None  # one subset of the train/val/test split (None: all events)
    data_quality: DataQualitySettings = Field(default_factory=DataQualitySettings)  # processors/dataquality.py

    @model_validator(mode="after")
    def _wp_on_score_edges(self):
        # the regions are sums of xy_mt bins everywhere (processor, scan, cards): the WP must be
        # a bin edge of the score axes, checked when the job is read
        edges = np.asarray(self.mt_edges, dtype=float)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
            raise ValueError(f"analysis.mt_edges must be at least two finite, strictly increasing values in GeV, got "
                             f"{list(self.mt_edges)}")
        if not (np.isfinite(self.lumi) and self.lumi > 0):
            raise ValueError(f"analysis.lumi must be a positive integrated luminosity in pb^-1, got {self.lumi!r}")
        if self.batch_events < 0:
            raise ValueError(f"analysis.batch_events must be >= 0 (0: a chunk in one batch), got {self.batch_events}")
        if self.score_bins < 1:
            raise ValueError(f"analysis.score_bins must be >= 1, got {self.score_bins}")
        axis = hist.axis.Regular(self.score_bins, 0, 1)
        for name, v in zip(("analysis.wp[0] (x0)", "analysis.wp[1] (y0)"), self.wp):
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} = {v!r} is outside [0, 1]: the X and Y scores are probabilities")
            H.edge_index(axis, v, name)
        return self


class ProcessorConfig(AnalysisSettings):
    """Settings of :class:`SVJProcessor`: the analysis settings plus datasets, schema, skim."""

    datasets: dict[str, DatasetInfo] = {}
    branch_map: BranchMap = Field(default_factory=BranchMap)
    skim_dir: str | None = None

    @model_validator(mode="after")
    def _quality_datasets(self):
        dq = self.data_quality
        if self.datasets:
            for name in dq.lumi_masks:
                if name not in self.datasets:
                    raise ValueError(f"datasets.{name}.lumi_mask: no dataset {name!r} in the job")
                if self.datasets[name].is_mc:
                    raise ValueError(f"datasets.{name}.lumi_mask: a golden-JSON lumi mask is for data; {name!r} is "
                                     f"{self.datasets[name].kind} (simulation is never lumi-masked)")
        return self

    def subset_scale(self, info: DatasetInfo) -> float:
        """``1 / fraction`` of ``analysis.event_subset`` for MC (1 without a subset): the yields of
        the subset's events scaled to estimate those of the full sample."""
        if self.event_subset is None or not info.is_mc:
            return 1.0
        return 1.0 / self.event_subset.fraction
