"""Anomaly detectors behind the one Detector interface (never imports sim)."""
