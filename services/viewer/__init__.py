"""rlrings viewer service (see README.md)."""
