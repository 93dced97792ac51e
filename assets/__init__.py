"""Data only: part cards, camera presets, materials (package data, no logic)."""
