"""Adaptive search over ensemble configurations with Ray Tune: a front door on top of
:class:`raytda.api.Sweep`, whose trials are sweeps of one configuration on a shared store.

Imported only by ``raytda tune`` and by users who search; nothing else needs Ray Tune.
"""
