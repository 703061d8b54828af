"""One Spark session (and the parity assertion) for every test that needs the Spark engine (starting a JVM takes seconds).

Spark is a real component here: when pyspark or Java is missing the tests fail with the
engine's own message (``make test`` installs the ``spark`` extra); they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from clinical_mlops.features.spark import SparkEngine, spark_session


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] SparkSession bound to 127.0.0.1, stopped at the end of the session."""
    session = spark_session(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_engine(spark: Any) -> SparkEngine:
    """The Spark feature engine on the shared session."""
    return SparkEngine(session=spark)


def assert_same_features(a: pd.DataFrame, b: pd.DataFrame, spec: Any) -> None:
    """Integers, flags and categories exactly; floats within 1e-9; nulls in the same cells."""
    assert list(a.columns) == list(b.columns)
    assert a["stay_id"].tolist() == b["stay_id"].tolist()
    for f in spec.features:
        x, y = a[f.name], b[f.name]
        assert (x.isna() == y.isna()).all(), f.name
        if f.kind == "numeric":
            np.testing.assert_allclose(
                x.to_numpy(float), y.to_numpy(float), rtol=0, atol=1e-9, err_msg=f.name
            )
        else:
            assert x.dropna().tolist() == y.dropna().tolist(), f.name
        assert x.dtype == y.dtype, f.name
