"""Bundled scenario YAML files (package data)."""
