"""coffea processors: scouting events -> AK8 jets -> preselection -> Lund planes -> features ->
ONNX scores -> ABCD histograms (and a parquet skim for training).

Read top to bottom: ``schema`` (branch mapping), ``jets`` (fastjet AK4/AK8), ``selection``
(trigger emulation + preselection, cutflow), ``lund`` (C-A primary Lund plane), ``features``
(event features, M_T, R_T), ``inference`` (onnxruntime sessions), ``histograms`` (hist
definitions), ``processor`` (the coffea ``ProcessorABC``), ``skim`` (parquet columns).
"""
