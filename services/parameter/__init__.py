"""rlrings parameter service (see README.md)."""
