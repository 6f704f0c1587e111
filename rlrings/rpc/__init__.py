"""The gRPC plumbing every service and client shares: servers and channels, security, codecs and wire
formats, settings loading and control RPCs. Knows no algorithm."""
