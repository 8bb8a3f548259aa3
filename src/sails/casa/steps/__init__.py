"""CASA job steps. Each module here exposes ``STEPS = {"op_name": function}``.

A step function is called as ``func(ctx, **args)`` and returns a dict of outputs/metrics
(JSON-serialisable) that the runner stores in ``result.json`` under the step's name.
"""
