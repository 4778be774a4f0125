"""What a Spark worker and the driver do during distributed training, without a SparkContext."""
