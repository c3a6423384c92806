"""What is specific to LundNet's training, one concept per module (the recipe: the docstring of
:mod:`svjscout.models.train_lundnet`, which re-exports the public names):

* :mod:`.config`: :class:`~.config.TrainConfig`;
* :mod:`.data`: the skim columns, :class:`~.data.JetSet`, ``load_skim`` (one copy per parent,
  the per-event split), events -> jets, the class-balanced training weights;
* :mod:`.stream`: the skim streamed in row groups for training;
* :mod:`.evaluation`: AUC tables, baselines, ``evaluate_lundnet_onnx``;
* :mod:`.report`: figures and the markdown report;
* :mod:`.train`: the loss, the validation loss and the entry point ``train_lundnet``;
* :mod:`.crossfit`: k-fold (by parent) cross-fitted out-of-fold scores for the twin's inputs.

The layer shared with the twin is :mod:`svjscout.models.training`.
"""
