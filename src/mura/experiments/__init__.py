"""Workflows that combine training, inference and evaluation (cross-validation); only the CLI is above."""
