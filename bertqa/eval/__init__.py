"""SQuAD and CoQA evaluation: the metrics, CoQA files, the compare runner and its report (SQuAD
files are read by bertqa.data.squad)."""
