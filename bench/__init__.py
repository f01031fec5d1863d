"""Benchmarks (not tests): each module prints its figures next to its budget."""
