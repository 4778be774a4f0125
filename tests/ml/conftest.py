"""Data the pyspark.ml tests share (the session itself comes from tests/conftest.py)."""
import pytest

from tests.helpers import PIXELS


@pytest.fixture(scope="session")
def digits_df(spark):
    """load_digits as 64 pixel columns and a label, split 80/20 (ordered by an id column)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    rows = [tuple(float(v) for v in x) + (float(t), i) for i, (x, t) in enumerate(zip(d.data, d.target))]
    df = spark.createDataFrame(rows, PIXELS + ["label", "id"]).repartition(2).cache()
    train = df.filter("id % 5 != 0").cache()
    test = df.filter("id % 5 = 0").cache()
    return train, test
