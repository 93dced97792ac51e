"""Scenario specs, the engine, metrics, reports and the CLI."""
