"""A new Dagster instance over a lake that already holds data: ``churn-assets adopt`` (``cli.py``), and what it does
(``adopt.py``): every partition the lake stores recorded in the instance, as a run would have recorded it."""
