"""Evaluators, one module per benchmark, each with an `evaluate_*` entry point returning the contract keys."""
