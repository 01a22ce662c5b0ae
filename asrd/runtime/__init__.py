"""What one array task runs on its node: the stages of the shard pipeline (see pipeline.py and driver.py) and the task around them (task.py)."""
