"""Simulated cells behind the ``Cell`` protocol: eye-in-hand (AVATAR) and part-in-hand
(PaDiM paper), the acquisition steps a real cell runs (hand-eye calibration, object pose
estimation), and the factory that builds a cell from a scenario."""
