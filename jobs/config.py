"""The job configuration: one YAML file, validated into typed objects before any event is read.

Unknown or missing keys are errors that name the key path (e.g. ``executor.workers``). Paths
may use two prefixes: ``embedded:NAME`` (a file of the embedded sample shipped with the
package) and ``shipped:NAME`` (a shipped ONNX model, e.g. ``shipped:lundnet``); other relative
paths are relative to the job file's folder. Every key is documented in docs/config.md.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Literal

import click
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from svjscout import samples
from svjscout.core.exceptions import ConfigError
from svjscout.datacards.settings import DatacardSettings, ScanSettings, ValidationSettings
from svjscout.datacards.split import subset_halves
from svjscout.jobs.provenance import models
from svjscout.models import shipped_model
from svjscout.processors.processor import AnalysisSettings, ProcessorConfig, check_event_subset
from svjscout.processors.schema import BranchMap

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "samples" / "embedded"
JOBS_DIR = Path(__file__).resolve().parent
EXECUTORS = frozenset({"iterative", "futures", "dask"})


def embedded_dir() -> Path:
    """Folder of the embedded sample (inside the installed package)."""
    return Path(samples.__file__).resolve().parent / "embedded"


class DatasetSpec(BaseModel):
    """One dataset: its files and (optionally) its normalisation and signal parameters.

    ``xsec`` (pb), ``sumw``, ``mzprime`` and ``rinv`` default to what the files record (the
    ``Runs`` tree and ``svjscout_meta`` of generated files). For MC files without a ``Runs`` tree
    the generated sum of weights is unknown: give ``sumw``, or ``sumw_from: genWeight`` to sum the
    ``genWeight`` branch over the files, which is right only for files that were not skimmed
    (a skimmed file's events are a fraction of those generated). Otherwise the run stops.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["signal", "background", "data"]
    files: list[str]
    xsec: float | None = None
    sumw: float | None = None
    sumw_from: Literal["genWeight"] | None = None
    mzprime: float | None = None
    rinv: float | None = None
    # data without a golden-JSON lumi mask is refused at load unless this is true (check_lumi_mask)
    allow_no_lumi_mask: bool = False
    # data quality (processors/dataquality.py, docs/dataquality.md): the dataset's era (trigger paths,
    # HEM, phi-spike map; null: analysis.data_quality.era) and, for data, its golden JSON
    era: str | None = None
    lumi_mask: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _era_as_str(cls, data):
        if isinstance(data, dict) and isinstance(data.get("era"), int) and not isinstance(data.get("era"), bool):
            data = {**data, "era": str(data["era"])}
        return data

    @model_validator(mode="after")
    def _positive_normalisation(self):
        # a negative or zero cross section or sum of weights makes every yield of the dataset
        # meaningless (and every limit missing): refused when the job is read
        for key in ("xsec", "sumw"):
            v = getattr(self, key)
            if v is not None and not (v == v and v > 0 and v != float("inf")):
                raise ValueError(f"{key} must be a positive finite number, got {v!r}")
        return self


class AnalysisSpec(AnalysisSettings):
    """The processor's analysis settings, with the shipped models as default."""

    lundnet_model: str = "shipped:lundnet"
    twin_model: str = "shipped:twin"


class AdaptiveSpec(BaseModel):
    """Adaptive scaling of a dask-gateway cluster: between ``minimum`` and ``maximum`` workers."""

    model_config = ConfigDict(extra="forbid")

    minimum: int = Field(default=0, ge=0)
    maximum: int = Field(..., ge=1)


class GatewaySpec(BaseModel):
    """A dask-gateway cluster (coffea-casa and other gateway facilities); needs ``svjscout[af]``.

    ``auth`` is the dask-gateway authenticator (``kerberos``, ``jupyterhub``, ``basic``; null:
    the gateway's own default); ``basic`` takes ``username`` and reads the password from the
    environment variable ``password_env`` (never from the job file). ``cluster_options`` are the
    gateway's cluster options (``gateway.cluster_options()`` lists them, e.g. ``worker_cores``,
    ``worker_memory``, ``image``). ``adaptive`` scales between minimum and maximum workers;
    without it the cluster has ``executor.workers`` workers. The cluster is shut down after the
    run unless ``shutdown: false``.
    """

    model_config = ConfigDict(extra="forbid")

    address: str | None = None  # null: the gateway configured in the environment (coffea-casa)
    proxy_address: str | None = None
    public_address: str | None = None
    auth: Literal["kerberos", "jupyterhub", "basic"] | None = None
    username: str | None = None
    password_env: str | None = None
    cluster_options: dict = Field(default_factory=dict)
    adaptive: AdaptiveSpec | None = None
    shutdown: bool = True


class XRootDSpec(BaseModel):
    """Remote (``root://``) reads: per-request timeout (s) and connection retries of the XRootD client."""

    model_config = ConfigDict(extra="forbid")

    timeout: int = Field(default=60, ge=0)  # 0: no timeout
    retries: int = Field(default=5, ge=0)


class ExecutorSpec(BaseModel):
    """How chunks are run: ``iterative`` (in process), ``futures`` (local processes) or ``dask``.

    A dask run starts a LocalCluster unless one engine of an analysis facility is named: an
    existing ``scheduler`` address, a dask-jobqueue ``slurm`` or ``condor`` cluster (the keys are
    the ``SLURMCluster`` / ``HTCondorCluster`` arguments) or a dask-``gateway`` cluster. At most
    one of them may be set; ``iterative``/``futures`` ignore them (with a warning).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["iterative", "futures", "dask"] = "dask"
    workers: int = 2
    threads_per_worker: int = 1
    scheduler: str | None = None  # address of an existing dask scheduler (analysis facility)
    slurm: dict | None = None  # dask-jobqueue SLURMCluster kwargs (optional extra 'af')
    condor: dict | None = None  # dask-jobqueue HTCondorCluster kwargs (optional extra 'af')
    gateway: GatewaySpec | None = None  # dask-gateway cluster (coffea-casa; optional extra 'af')
    worker_timeout: float = Field(default=600.0, gt=0)  # seconds to wait for the first worker of a cluster
    xrootd: XRootDSpec = Field(default_factory=XRootDSpec)
    chunksize: int = 2000
    retries: int = 3
    skip_bad_files: bool = False
    checkpoint_dir: str | None = None
    memory_limit: str = "4GB"

    @model_validator(mode="after")
    def _one_engine(self):
        named = [k for k in ("scheduler", "slurm", "condor", "gateway") if getattr(self, k) is not None]
        if len(named) > 1:
            raise ValueError(f"set at most one of executor.scheduler, .slurm, .condor, .gateway (got "
                             f"{', '.join(named)})")
        if self.gateway is not None and self.gateway.auth == "basic" and not self.gateway.username:
            raise ValueError("executor.gateway.auth: basic needs executor.gateway.username (and password_env)")
        return self

    @property
    def engine(self) -> str:
        """``local`` (a LocalCluster) or the facility engine that runs the dask chunks."""
        return next((k for k in ("scheduler", "slurm", "condor", "gateway") if getattr(self, k) is not None), "local")


#: the statistics stages' settings are the datacards layer's models (datacards/settings.py), used
#: whole as the job's ``scan:``, ``datacards:`` and ``validation:`` blocks
ScanSpec = ScanSettings
DatacardSpec = DatacardSettings


class PlotsSpec(BaseModel):
    """How the figures are labelled: ``CMS [Simulation] <label>``, PNG resolution (PDF is vector)."""

    model_config = ConfigDict(extra="forbid")

    label: str = "Private Work"
    dpi: int = Field(default=150, ge=150, le=1200)


ValidationSpec = ValidationSettings


class JobConfig(BaseModel):
    """A whole job: datasets, schema mapping, analysis settings, executor, scan, datacards."""

    model_config = ConfigDict(extra="forbid")

    name: str = "svjscout-job"
    datasets: dict[str, DatasetSpec]
    schema_map: BranchMap = Field(default_factory=BranchMap, alias="schema")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    scan: ScanSettings = Field(default_factory=ScanSettings)
    datacards: DatacardSettings = Field(default_factory=DatacardSettings)
    plots: PlotsSpec = Field(default_factory=PlotsSpec)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    base_dir: Path = Path(".")

    def resolve(self, path: str) -> str:
        """A path from the config: ``embedded:``/``shipped:`` prefixes, or relative to the job file."""
        if path.startswith("embedded:"):
            return str(embedded_dir() / path.split(":", 1)[1])
        if path.startswith("shipped:"):
            return str(shipped_model(path.split(":", 1)[1]))
        if "://" in path or Path(path).is_absolute():
            return path
        return str((self.base_dir / path).resolve())

    def files(self, dataset: str) -> list[str]:
        """The dataset's files, resolved; local ``*`` patterns are expanded (sorted)."""
        out = []
        for f in self.datasets[dataset].files:
            path = self.resolve(f)
            if "*" in path and "://" not in path:
                matches = sorted(glob.glob(path))
                if not matches:
                    raise ConfigError(f"datasets.{dataset}.files: pattern {f!r} matches no file")
                out += matches
            else:
                out.append(path)
        return out

    def processor_config(self, datasets_info: dict, skim_dir: str | None = None) -> ProcessorConfig:
        a = self.analysis
        settings = {**dict(a), "lundnet_model": self.resolve(a.lundnet_model), "twin_model": self.resolve(a.twin_model)}
        sy, co = a.systematics, a.corrections
        if sy.payload and not sy.payload.startswith("shipped:"):  # a user's payload file, relative to the job file
            settings["systematics"] = sy.model_copy(update={"payload": self.resolve(sy.payload)})
        if co.root != "shipped":  # a folder in the CMS JSON POG layout, relative to the job file
            settings["corrections"] = co.model_copy(update={"root": self.resolve(co.root)})
        dq = a.data_quality  # the datasets' eras and golden JSONs; files relative to the job file
        spike = dq.phi_spike.model_copy(update={"map": self.resolve(dq.phi_spike.map) if dq.phi_spike.map else None})
        settings["data_quality"] = dq.model_copy(update={
            "eras": {**dq.eras, **{n: d.era for n, d in self.datasets.items() if d.era is not None}},
            "lumi_masks": {**{k: self.resolve(v) for k, v in dq.lumi_masks.items()},
                           **{n: self.resolve(d.lumi_mask) for n, d in self.datasets.items() if d.lumi_mask}},
            "phi_spike": spike})
        return ProcessorConfig(**settings, datasets=datasets_info, branch_map=self.schema_map, skim_dir=skim_dir)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {loc}: {e['msg']}" + (f" (got {e['input']!r})" if e["type"] != "missing" else ""))
    return f"{source}: invalid job configuration\n" + "\n".join(lines)


def parse_set(items, example: str) -> dict:
    """``--set KEY=VALUE`` items of a CLI verb as ``{dotted key: YAML value}`` (:func:`load_job`'s
    ``overrides``); an item without ``=`` is refused, shown with ``example``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE (e.g. {example}), got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_job(path: str | Path | None = None, overrides: dict | None = None) -> JobConfig:
    """Load and validate a job YAML (default: the embedded-sample job ``jobs/local.yaml``).

    Raises:
        ConfigError: unreadable YAML or invalid keys; the message lists each key path.
    """
    path = Path(path) if path else JOBS_DIR / "local.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read job configuration ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job configuration must be a mapping, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    raw.setdefault("base_dir", str(path.resolve().parent))
    try:
        cfg = JobConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path))) from err
    try:  # refused before any file is opened (the processor refuses it too)
        check_event_subset(cfg.analysis.event_subset, {name: d.kind for name, d in cfg.datasets.items()})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    check_split_on(cfg, str(path))
    check_lumi_mask(cfg, str(path))
    for key in ("lundnet_model", "twin_model"):  # a mistyped model fails here, not after the first chunks
        given = getattr(cfg.analysis, key)
        model = cfg.resolve(given)
        if "://" not in model and not Path(model).is_file():
            raise ConfigError(f"{path}: analysis.{key}: {given!r} resolves to {model}, "
                              f"which does not exist (relative paths are relative to the job file)")
    return cfg


def check_split_on(cfg: JobConfig, source: str = "job") -> None:
    """Refuse ``scan.split_on: subsets`` without two subsets in ``analysis.event_subset`` (the one
    the working point is chosen on, then the one it is quoted on) or with the split off."""
    if cfg.scan.split_on != "subsets":
        return
    sub = cfg.analysis.event_subset
    if not cfg.scan.split:
        raise ConfigError(f"{source}: scan.split_on: subsets needs scan.split: true")
    if sub is None or len(sub.names) != 2:
        got = "no analysis.event_subset" if sub is None else f"analysis.event_subset.subset {list(sub.names)}"
        raise ConfigError(f"{source}: scan.split_on: subsets chooses the working point on one subset of the event "
                          f"split and quotes it on another: analysis.event_subset.subset must list two (e.g. "
                          f"[select, final]), got {got}")


def scan_subsets(cfg: JobConfig) -> dict[str, tuple[int, float]] | None:
    """The ``subsets`` argument of :func:`~svjscout.datacards.choice.choose_working_point` for the
    job (``scan.split_on: subsets``), else None."""
    sub = cfg.analysis.event_subset
    if cfg.scan.split_on != "subsets" or sub is None:
        return None
    return subset_halves(sub.names, sub.codes, [sub.fraction_of(n) for n in sub.names])


def check_lumi_mask(cfg: JobConfig, source: str = "job") -> None:
    """Refuse data (kind ``data``) without a golden-JSON lumi mask (``datasets.NAME.lumi_mask``,
    applied by the processor's ``lumi_mask`` row with coffea's LumiMask) unless the dataset sets
    ``allow_no_lumi_mask: true``; refuse ``lumi_mask`` on simulation (never masked).

    Raises:
        ConfigError: names each dataset at fault.
    """
    eras = cfg.analysis.data_quality.trigger.paths
    for n, d in cfg.datasets.items():
        if d.era is not None and d.era not in eras:
            raise ConfigError(f"{source}: datasets.{n}.era: era {d.era!r} has no trigger paths in "
                              f"analysis.data_quality.trigger.paths (eras {sorted(eras)})")
    mc = sorted(n for n, d in cfg.datasets.items() if d.kind != "data" and d.lumi_mask)
    if mc:
        raise ConfigError(f"{source}: datasets.{mc[0]}.lumi_mask: a golden-JSON lumi mask is for data; "
                          f"{', '.join(mc)} {'is' if len(mc) == 1 else 'are'} simulation (never lumi-masked)")
    bad = sorted(n for n, d in cfg.datasets.items()
                 if d.kind == "data" and not d.lumi_mask and not cfg.analysis.data_quality.lumi_masks.get(n)
                 and not d.allow_no_lumi_mask)
    if bad:
        raise ConfigError(
            f"{source}: datasets.{bad[0]}: data without a lumi mask ({', '.join(bad)}): set datasets.<name>.lumi_mask "
            "to the era's golden JSON (applied by the lumi_mask row), or datasets.<name>.allow_no_lumi_mask: true to "
            "process every lumisection, good or bad, on purpose (jobs/data.yaml)")


def config_digest(cfg: JobConfig) -> str:
    """A short hash of everything that changes the processor output (for checkpoints).

    The models enter by content (SHA-256), not by path: a retrained model saved over the old file
    must not reuse chunks processed with the old one.
    """
    payload = cfg.model_dump(mode="json", exclude={"executor", "scan", "datacards", "plots", "validation", "name"})
    payload["model_sha256"] = {k: v["sha256"] for k, v in models(cfg).items()}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
