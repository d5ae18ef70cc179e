"""Domain operations shared by the REST handlers and the scheduler.

What belongs here: an operation on datasets, jobs, tasks or tokens that both ``iceprod.rest``
and ``iceprod.server`` perform, so that neither has to import the other. Today that is

- ``rollup``: job and dataset statuses follow their tasks; suspend/resume cascades;
- ``queue`` and ``priority``: queueing ready tasks with fair share;
- ``keys``: the derived ids of materialized jobs and tasks and cross-dataset dependencies;
- ``roles`` and ``tokens``: the role table and minting signed tokens (verifying them stays in
  ``iceprod.rest.auth``).

Layering: ``core`` imports only ``iceprod.common`` and ``iceprod.db``; ``rest`` and
``server`` import ``core`` (``tests/test_layout.py`` enforces it). The scheduler's loop and
what only it uses (materializing a dataset's jobs) stay in ``iceprod.server.scheduler``.
"""
