"""The trial machinery: the session a command opens, the screen before training, the pipeline (train, deploy,
retrain) and the trial record with its study queries."""
