"""The training layer shared by LundNet (:mod:`..train_lundnet`) and the twin MLPs (:mod:`..train_twin`).

Each module is one concept, written once and used by both trainers:

* :mod:`.data`: skim files read in parquet row groups (memory bounded by a row group / buffer,
  not by the sample), the event split (:mod:`svjscout.core.splits`), class weights computed
  from streamed sums, fixed-size reservoirs of held-out events, seeded per-epoch plans
  (row-group order, buffers, minibatches) and the torch device;
* :mod:`.loop`: epochs, early stopping on a validation figure, checkpoints that hold the model,
  the optimiser, extra modules (MDMM multipliers), the RNG states and the stream position, and
  resume after an interruption (bit for bit: tests/test_training.py);
* :mod:`.metrics`: weighted AUC and ROC, per-signal-point AUC weights, baseline orientation;
* :mod:`.report`: JSON and markdown writing, figures.

What is specific to one model (its columns, losses, constraints, report text) stays in its trainer's
package: :mod:`svjscout.models.twin_training`, :mod:`svjscout.models.lundnet_training`.
"""
