"""The monitoring group: a daily drift report on the query log, and retraining when it drifts."""
