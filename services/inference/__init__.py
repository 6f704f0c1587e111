"""The inference service: the policy's forward pass for every actor and game server, batched on the learner's device."""
