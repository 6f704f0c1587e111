"""rlrings actor service (see README.md)."""
