"""Training: the loop, optimisers and learning-rate schedules, prediction, device and precision, schedules,
seeds in parallel processes, the fit memo, checkpoints, the live log, stage setup and pretraining."""
