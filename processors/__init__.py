"""coffea processors: scouting events -> AK8 jets -> preselection -> Lund planes -> features ->
ONNX scores -> ABCD histograms (and a parquet skim for training).

Read top to bottom: ``files`` (safe reads), ``schema`` (branch mapping), ``settings`` (the
processor's configuration: datasets, analysis block), ``datasets`` (each dataset's cross section and
sum of weights from its files), ``jets`` (fastjet AK4/AK8), ``prefilter``,
``selection`` (trigger emulation + preselection, cutflow), ``lund`` (C-A primary Lund plane),
``features`` (event features, M_T, R_T), ``inference`` (onnxruntime sessions, the models'
preflight), ``histograms`` (hist definitions), ``variations`` (the registry of systematic
sources), ``skim`` (parquet columns), ``processor`` (the coffea ``ProcessorABC``, as named
stages), ``normalize`` (xsec x lumi / sumw and parent-grouped variances, pure and idempotent).
"""
