"""The actor service: vectors of game environments feeding replay."""
