"""svjscout: a CMS semi-visible-jet search on Run-2 HLT-scouting data.

Subpackages (one per step of the data path):

* :mod:`svjscout.samples`    -- Pythia 8 generation + fast detector response, the embedded sample
* :mod:`svjscout.processors` -- coffea processors: jets, preselection, Lund planes, features, ONNX, histograms
* :mod:`svjscout.models`     -- LundNet and the twin MLPs (torch -> ONNX), distance correlation, MDMM
* :mod:`svjscout.datacards`  -- ABCD prediction, working-point scan, Combine datacards, quick limits
* :mod:`svjscout.jobs`       -- job configs, executors, checkpoints and the ``svjscout`` CLI

Use it from Python (a coffea plugin)::

    from coffea import processor
    from svjscout import SVJScoutingSchema, processor_from_job

    proc, fileset, _ = processor_from_job("jobs/local.yaml")  # preflight: models, files, xsec and sumw
    runner = processor.Runner(processor.IterativeExecutor(), schema=SVJScoutingSchema)
    out = runner(fileset, processor_instance=proc, treename="Events")  # normalised (postprocess)

The public names (``__all__``) are loaded on first use (a module ``__getattr__``), so that
``import svjscout`` and ``svjscout --version`` import neither coffea nor onnxruntime.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "SVJProcessor": "svjscout.processors.processor",
    "ProcessorConfig": "svjscout.processors.settings",
    "AnalysisSettings": "svjscout.processors.settings",
    "DatasetInfo": "svjscout.processors.settings",
    "EventSubset": "svjscout.processors.settings",
    "BranchMap": "svjscout.processors.schema",
    "SVJScoutingSchema": "svjscout.processors.schema",
    "processor_config_from_fileset": "svjscout.processors.datasets",
    "normalize": "svjscout.processors.normalize",
    "is_normalized": "svjscout.processors.normalize",
    "processor_from_job": "svjscout.jobs.runner",
    "processor_config_from_job": "svjscout.jobs.runner",
    "load_job": "svjscout.jobs.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'svjscout' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
