"""The agents group: the registry and its check, the evaluation suite, threads waiting for a
human (and the job that answers them), checkpoint retention and the store's migration."""
