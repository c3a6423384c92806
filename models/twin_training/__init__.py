"""What is specific to the twin MLPs' training, one concept per module (the recipe: the
docstring of :mod:`svjscout.models.train_twin`, which re-exports the public names):

* :mod:`.config`: :class:`~.config.TwinTrainConfig`, the constraint names and default targets;
* :mod:`.data`: the skim's columns (:class:`~.data.SkimData`, ``load_skim``, LundNet scores
  computed where missing), the split codes, the analysis preselection mask, the class weights;
* :mod:`.stream`: the skim streamed in row groups for training;
* :mod:`.losses`: BCE and the MDMM constraints (dCorr, closure, occupancy), their noise floors;
* :mod:`.evaluation`: AUCs, baselines, dCorr and closures of a split, the target check;
* :mod:`.report`: figures and the markdown/JSON report;
* :mod:`.train`: the entry point ``train_twin`` (and ``load_checkpoint``, from :mod:`.checkpoint`);
* :mod:`.tradeoff`: the decorrelation trade-off table (validation) and docs/twin.md's copy.

The layer shared with LundNet is :mod:`svjscout.models.training`.
"""
