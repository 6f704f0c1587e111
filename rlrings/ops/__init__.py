"""Running rlrings: the ``rlrings`` command, service processes and the cloud (Terraform, Helm)."""
