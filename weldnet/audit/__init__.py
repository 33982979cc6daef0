"""The label audit: the mislabelling estimate, its cheap cross-validated model, its run and the review sheets."""
