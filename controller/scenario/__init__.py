"""Scenario files, the run and sweep machinery, results and plots (``pcm-twin run/sweep``).

- :mod:`~controller.scenario.durations`: ``1y``, ``6h``, ``90min`` and log-spaced time grids;
- :mod:`~controller.scenario.schema`: the pydantic schema of a scenario file;
- :mod:`~controller.scenario.loader`: read a file, merge variants, check, map errors to lines;
- :mod:`~controller.scenario.runner`: run every variant and seed against a twin, using
  :mod:`~controller.scenario.prepare` (train and map a variant),
  :mod:`~controller.scenario.seed_run` (one variant on one seed),
  :mod:`~controller.scenario.pool` (runs in this process or in workers),
  :mod:`~controller.scenario.twin` (the embedded twin), :mod:`~controller.scenario.resume`
  (checkpoint of an interrupted run) and :mod:`~controller.scenario.progress`;
- :mod:`~controller.scenario.results`: the run folder (timeline, events, summary);
- :mod:`~controller.scenario.plots`: accuracy, energy and Pareto-front plots;
- :mod:`~controller.scenario.sweep`: grids of scenarios, locally or on Dask, with resume.
"""
