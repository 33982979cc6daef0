"""Training: the loop, schedules, checkpoints, the live log and pretraining."""
