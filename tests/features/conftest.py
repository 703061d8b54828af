"""Fixtures of the feature-engine tests: the shared Spark session (see tests/spark_session.py)."""

from spark_session import spark, spark_engine  # noqa: F401
