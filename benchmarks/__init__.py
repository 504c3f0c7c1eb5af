"""Benchmarks of the churn_assets graph at named scales: ``python -m benchmarks.run --scale small``.

Figures, the machine they were measured on and where the time goes are in ``docs/benchmarks.md``.
Data lives under ``benchmarks/.data/`` (git-ignored).
"""
