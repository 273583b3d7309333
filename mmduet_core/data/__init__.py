"""Benchmark and training annotations: readers, validators, converters from public gold files."""
