"""Deployable rlrings services: one package each, thin shells over domain classes."""
