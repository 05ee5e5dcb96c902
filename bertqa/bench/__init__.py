"""Benchmarks: each checks its result first, then times it and states the device and its peak."""
