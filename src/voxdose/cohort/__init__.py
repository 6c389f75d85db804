"""Cohorts: many studies run as one dask.distributed job (``voxdose cohort``), the cohort's
summary tables, the pre-therapy -> post-therapy loop and ``cohort.html`` (docs/cohort.md)."""
