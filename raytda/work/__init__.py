"""Job bodies: each runs one job of :mod:`raytda.plan.job` against a store, calling the
compute core. Executors reach them through ``Job.run``."""
