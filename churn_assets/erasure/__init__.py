"""Erasing users (GDPR art. 17): ``churn-assets erase`` (``cli.py``), and what it does (``erase.py``).

An erasure adds the users to the lake's erased-users list (``resources/erased_users.py``), which ``raw_events``
applies to every day it reads from then on, then rewrites every stored partition that holds them without their rows,
each in one atomic write through ``Lake.write_table`` (the bytes the IO manager would store for the same rows), and
records each rewritten partition of an asset in the Dagster instance as a materialization (outside a run) whose data
version is the one a range run over them would record. What it does not change, and why: ``erase.NOT_ERASED``.
"""
