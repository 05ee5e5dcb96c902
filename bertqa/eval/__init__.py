"""SQuAD evaluation: the metric, the file readers, the compare runner and its report."""
