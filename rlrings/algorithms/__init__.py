"""Learning algorithms as plain PyTorch: losses are functions of tensors,
learners own a model and an optimizer. Nothing here knows about gRPC."""
