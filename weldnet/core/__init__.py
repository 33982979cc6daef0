"""Foundations every other package builds on: params and their validation, flags, paths, worker pools, progress, metrics."""
