"""Readers and sample data sets; nothing here imports pyspark."""
