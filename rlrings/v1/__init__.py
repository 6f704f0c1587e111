"""Code generated from ``protos/rlrings/v1`` by ``make protos``; do not edit."""
