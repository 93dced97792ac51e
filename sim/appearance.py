"""The benign reality gap: seeded "real" looks versus the clean CAD look of the twin.

Real captures differ from the twin by material colour and specularity, light placement and
intensity, table colour (background), exposure, and sensor noise; none of these must be
flagged. Texture defects get their own material in the real look only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.geometry import look_at
from sim.render import Light, Material

TWIN_PART = Material((0.72, 0.72, 0.74), metallic=0.0, roughness=0.6)
TWIN_TABLE = Material((0.18, 0.18, 0.2), metallic=0.0, roughness=0.9)
TWIN_BACKGROUND = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class AppearanceGap:
    """Magnitudes of the benign gap; 0 everywhere makes "real" look like the twin.

    ``color_jitter``: max absolute change of the part's base colour per channel (0-1);
    ``metallic``/``roughness``: ranges of the real material; ``light_jitter_deg``: max
    angle between the real key light and the twin's; ``light_intensity``: range of the real
    key light's intensity (the twin uses 3.0); ``table_jitter``: max change of table colour;
    ``exposure``: max relative exposure change; ``noise_sigma``: sensor noise std in 8-bit
    levels; ``scratch_color``: base colour of scratch faces.
    """

    color_jitter: float = 0.05
    metallic: tuple[float, float] = (0.2, 0.5)
    roughness: tuple[float, float] = (0.35, 0.6)
    light_jitter_deg: float = 20.0
    light_intensity: tuple[float, float] = (2.5, 3.5)
    table_jitter: float = 0.08
    exposure: float = 0.08
    noise_sigma: float = 2.0
    scratch_color: tuple[float, float, float] = (0.15, 0.13, 0.12)


@dataclass(frozen=True)
class Look:
    """Everything appearance-related for one render: materials, lights, exposure, noise."""

    part: Material
    table: Material
    lights: tuple[Light, ...]
    background: tuple[float, float, float]
    exposure_gain: float
    noise_sigma: float
    scratch: Material | None = None


def _key_light(center: np.ndarray, direction: np.ndarray, intensity: float) -> Light:
    """A directional light arriving from ``direction`` (unit, towards the light) at centre."""
    T = look_at(center + direction, center)
    return Light("directional", T, intensity=intensity)


# The twin is lit by a fixed key light from above-front-left plus ambient; no noise.
TWIN_KEY_DIR = np.array([-0.3, -0.4, 0.87]) / np.linalg.norm([-0.3, -0.4, 0.87])


def twin_look(center: np.ndarray) -> Look:
    """The clean CAD look of the twin render (deterministic)."""
    return Look(
        TWIN_PART, TWIN_TABLE, (_key_light(center, TWIN_KEY_DIR, 3.0),), TWIN_BACKGROUND, 1.0, 0.0
    )


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    """Clip a colour (3,) to [0, 1] as a tuple."""
    r, g, b = (float(v) for v in np.clip(values, 0.0, 1.0))
    return (r, g, b)


def real_look(center: np.ndarray, gap: AppearanceGap, rng: np.random.Generator) -> Look:
    """A seeded real look: the twin's look perturbed within ``gap``."""
    base = np.asarray(TWIN_PART.base_color) + rng.uniform(-gap.color_jitter, gap.color_jitter, 3)
    part = Material(
        _rgb(base),
        metallic=float(rng.uniform(*gap.metallic)),
        roughness=float(rng.uniform(*gap.roughness)),
    )
    table_rgb = np.asarray(TWIN_TABLE.base_color) + rng.uniform(
        -gap.table_jitter, gap.table_jitter, 3
    )
    table = Material(_rgb(table_rgb), roughness=0.9)
    # Tilt the key light by up to light_jitter_deg about a random horizontal axis.
    axis = rng.normal(size=3)
    axis[2] = 0.0
    axis /= np.linalg.norm(axis) + 1e-12
    ang = np.radians(rng.uniform(0, gap.light_jitter_deg))
    d = TWIN_KEY_DIR
    # Rodrigues' rotation of d about the (unit) axis.
    d = d * np.cos(ang) + np.cross(axis, d) * np.sin(ang) + axis * (axis @ d) * (1 - np.cos(ang))
    d[2] = max(d[2], 0.2)
    d /= np.linalg.norm(d)
    key = _key_light(center, d, float(rng.uniform(*gap.light_intensity)))
    gain = float(1.0 + rng.uniform(-gap.exposure, gap.exposure))
    return Look(
        part,
        table,
        (key,),
        TWIN_BACKGROUND,
        gain,
        gap.noise_sigma,
        Material(gap.scratch_color, metallic=0.0, roughness=0.95),
    )


def apply_sensor(rgb: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Exposure gain then additive Gaussian noise on (H, W, 3) uint8; returns uint8."""
    if look.exposure_gain == 1.0 and look.noise_sigma == 0.0:
        return rgb
    img = rgb.astype(np.float32) * look.exposure_gain
    if look.noise_sigma > 0:
        img += rng.normal(0.0, look.noise_sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
