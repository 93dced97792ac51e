"""Seeded pose-error models: the named sources that put the twin off the real pose.

Each source perturbs a pose by a small rigid motion drawn from its own generator:
- ``robot``: repeatability, a fresh error at every capture on the flange pose;
- ``hand_eye``: calibration error of ``T_ee_cam``, drawn once per run;
- ``object_pose``: error of the estimated part pose ``T_base_obj``, drawn once per part.

Magnitudes are RMS values: a translation of ``translation_mm`` draws each axis from
N(0, (translation_mm / sqrt 3)^2), so the expected squared length is translation_mm^2; a
rotation draws a rotation vector the same way with ``rotation_deg``. Zero means exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.geometry import make_pose, rotation_matrix

ERROR_SOURCES = ("robot", "hand_eye", "object_pose")


@dataclass(frozen=True)
class PoseErrorModel:
    """RMS translation (mm) and rotation (degrees) of one named error source."""

    name: str
    translation_mm: float = 0.0
    rotation_deg: float = 0.0

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A perturbation ``T`` (4, 4) to right-multiply onto the pose it corrupts."""
        t = rng.normal(0.0, 1.0, 3) * (self.translation_mm * 1e-3 / np.sqrt(3.0))
        r = rng.normal(0.0, 1.0, 3) * (np.radians(self.rotation_deg) / np.sqrt(3.0))
        return make_pose(rotation_matrix(r), t)
