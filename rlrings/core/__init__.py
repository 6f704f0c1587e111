"""The RL core: spaces, distributions, models, the learner ring, replay tables from the algorithms,
video. Knows nothing of gRPC or protobuf (``rlrings.rpc.wire`` converts at the edge)."""
