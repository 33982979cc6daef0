"""Scoring: evaluation, paired comparisons, studies, plots and the pull-request report."""
