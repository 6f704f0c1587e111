"""rlrings learner service (see README.md)."""
