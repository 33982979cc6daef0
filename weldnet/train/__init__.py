"""Training: the loop, optimisers and learning-rate schedules, prediction, device and precision, schedules,
the fit memo, checkpoints, the live log, stage setup and pretraining."""
