"""The bottom layer of svjscout: the contracts every stage shares, importing no other layer.

* :mod:`~svjscout.core.exceptions` -- the error classes;
* :mod:`~svjscout.core.cuts` -- the preselection thresholds (:class:`Cuts`), the cut order, the plane rule;
* :mod:`~svjscout.core.regions` -- the ABCD regions and planes, defined once;
* :mod:`~svjscout.core.features` -- the feature names of the networks' inputs;
* :mod:`~svjscout.core.splits` -- the deterministic train/validation/test event split;
* :mod:`~svjscout.core.parents` -- parent (generated-event) records and their grouped variances;
* :mod:`~svjscout.core.modelmeta` -- the ONNX metadata contract (read side);
* :mod:`~svjscout.core.formats` -- number formats (datacards);
* :mod:`~svjscout.core.constants` -- constants used by more than one stage;
* :mod:`~svjscout.core.progress` -- progress bars.

The layers above import only downward: ``samples -> processors -> models -> datacards -> jobs``
(each may import the ones before it and ``core``; tests/test_layers.py checks it).
"""
