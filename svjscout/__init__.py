"""svjscout: a CMS semi-visible-jet search on Run-2 HLT-scouting data.

Subpackages (one per step of the data path):

* :mod:`svjscout.samples`    -- Pythia 8 generation + fast detector response, the embedded sample
* :mod:`svjscout.processors` -- coffea processors: jets, preselection, Lund planes, features, ONNX, histograms
* :mod:`svjscout.models`     -- LundNet and the twin MLPs (torch -> ONNX), distance correlation, MDMM
* :mod:`svjscout.datacards`  -- ABCD prediction, working-point scan, Combine datacards, quick limits
* :mod:`svjscout.jobs`       -- job configs, executors, checkpoints and the ``svjscout`` CLI
"""

__version__ = "0.1.0"
