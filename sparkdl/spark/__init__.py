"""The Spark layer: the only package of sparkdl that imports pyspark.

``SparkModel`` trains, predicts and evaluates on a cluster (``load_spark_model`` reads one
saved with ``SparkModel.save``); ``get_session`` makes a SparkSession with sparkdl's
settings; ``from_arrays`` and ``to_simple_rdd`` turn NumPy arrays into a DataFrame or
Elephas' RDD shape; ``release_cached_blocks`` frees the converted blocks a fit keeps for the
next fit of the same DataFrame.
"""
from sparkdl.spark.block_cache import release_cached_blocks
from sparkdl.spark.blocks import to_simple_rdd
from sparkdl.spark.frames import from_arrays
from sparkdl.spark.session import get_session
from sparkdl.spark.spark_model import SparkModel, load_spark_model

__all__ = ["SparkModel", "from_arrays", "get_session", "load_spark_model", "release_cached_blocks",
           "to_simple_rdd"]
