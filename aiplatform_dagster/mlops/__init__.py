"""MLOps: experiment tracking, the model registry, training, validation gates."""
