"""The Spark layer: the only package of sparkdl that imports pyspark.

``SparkModel`` trains, predicts and evaluates on a cluster; ``get_session`` makes a
SparkSession with sparkdl's settings; ``to_simple_rdd`` turns arrays into Elephas' RDD shape.
"""
from sparkdl.spark.frames import to_simple_rdd
from sparkdl.spark.session import get_session
from sparkdl.spark.spark_model import SparkModel

__all__ = ["SparkModel", "get_session", "to_simple_rdd"]
