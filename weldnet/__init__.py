"""Library for the weld-photo class-imbalance pipeline: pure functions, no file paths."""
