"""Compatibility package: the seed document's import paths."""
