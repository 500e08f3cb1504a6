"""The core layer: what every other package builds on.

Errors, the registries and the settings model, run configuration types,
image sources, the model zoo, training, the trained-model store ("get me
this trained model" as a function of a model spec), the predictor protocol,
the record schema and metric directions, executors for independent jobs.

Nothing in ``suite.core`` imports ``compression``, ``attacks``,
``fingerprints``, ``reports`` or ``suite.app``; ``tests/test_layers.py``
checks that on the import graph.
"""
