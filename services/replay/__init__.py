"""The replay service: Reverb-class experience tables served over gRPC."""
