"""The learner service: samples replay, trains, publishes weights."""
