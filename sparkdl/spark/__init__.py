"""The Spark layer: the only package of sparkdl that imports pyspark."""
