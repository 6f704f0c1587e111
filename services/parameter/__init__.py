"""The parameter service: versioned weights, pushed to actors, pulled by users."""
