"""Benchmarks run by ``make bench``; figures go to bench/results/*.json."""
