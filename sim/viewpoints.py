"""Equal-area polyhedral viewpoint sets (AVATAR-style geodesic icosphere) around an object.

Candidate camera directions are the vertices of a geodesic icosphere (an icosahedron whose
faces are recursively split into four and re-projected onto the unit sphere). Unlike a
latitude/longitude grid, whose cells shrink to nothing at the poles, every vertex of this
polyhedron owns a nearly equal share of the sphere, so each view covers a similar solid angle.
The set is then restricted to an elevation band (base frame z up), since views from below the
work surface or straight down the gravity axis are usually unreachable or uninformative.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import trimesh
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import SphericalVoronoi

from sim.geometry import look_at

FloatArray = NDArray[np.float64]

__all__ = [
    "MAX_SUBDIVISIONS",
    "Viewpoint",
    "icosphere_directions",
    "plan_viewpoints",
    "viewpoint_solid_angles",
]

#: Largest accepted subdivision level (10 242 vertices); higher levels are needlessly dense.
MAX_SUBDIVISIONS = 5

# Slack (rad) on the inclusive elevation bounds so vertices lying exactly on a bound (e.g. the
# pole at 90 deg) are not dropped because of rounding in arcsin.
_ELEVATION_SLACK_RAD = 1e-9


@dataclass(frozen=True, eq=False)
class Viewpoint:
    """One candidate camera pose on the viewing sphere (arrays are float64 and read-only).

    Attributes:
        view_id: index of the direction in ``icosphere_directions(subdivisions)``; stable
            under any elevation filter, so ids from different bands can be compared.
        direction: (3,) unit vector in the base frame from the sphere centre to the camera.
        elevation_rad: angle of ``direction`` above the horizontal plane through the centre.
        azimuth_rad: ``atan2(y, x)`` of ``direction`` in (-pi, pi].
        T_base_cam: (4, 4) OpenCV camera pose at ``centre + radius * direction`` looking at
            the centre (``sim.geometry.look_at`` with world up +z).
    """

    # eq=False: dataclass equality/hash over numpy arrays is ill-defined, so identity is used.
    view_id: int
    direction: FloatArray
    elevation_rad: float
    azimuth_rad: float
    T_base_cam: FloatArray


def _check_subdivisions(subdivisions: int) -> int:
    """Validate the subdivision level and return it as an int."""
    if (
        isinstance(subdivisions, bool)
        or not isinstance(subdivisions, int | np.integer)
        or not 0 <= subdivisions <= MAX_SUBDIVISIONS
    ):
        raise ValueError(
            f"subdivisions must be an integer in 0..{MAX_SUBDIVISIONS}, got {subdivisions!r}"
        )
    return int(subdivisions)


@lru_cache(maxsize=MAX_SUBDIVISIONS + 1)
def _icosphere_directions_cached(subdivisions: int) -> FloatArray:
    """Compute (and cache) the unit icosphere vertices for a validated subdivision level."""
    vertices = np.asarray(
        trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0).vertices,
        dtype=np.float64,
    )
    # trimesh already projects onto the sphere; renormalize to remove its last-ulp error.
    vertices = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    vertices.setflags(write=False)
    return vertices


def icosphere_directions(subdivisions: int) -> FloatArray:
    """Return the (N, 3) float64 unit vertices of ``trimesh.creation.icosphere(subdivisions)``.

    N = 10 * 4**subdivisions + 2 (12, 42, 162, 642, ...). Row order is trimesh's vertex order
    and defines ``Viewpoint.view_id``. ``subdivisions`` must be in 0..MAX_SUBDIVISIONS.
    """
    return _icosphere_directions_cached(_check_subdivisions(subdivisions)).copy()


def viewpoint_solid_angles(subdivisions: int) -> FloatArray:
    """Return the (N,) solid angles (sr) of each icosphere vertex's spherical Voronoi cell.

    Rows match ``icosphere_directions(subdivisions)``; the values sum to 4 pi. Their max/min
    ratio measures how close to equal-area the viewpoint set is.
    """
    directions = _icosphere_directions_cached(_check_subdivisions(subdivisions))
    voronoi = SphericalVoronoi(np.array(directions), radius=1.0, center=np.zeros(3))
    return np.asarray(voronoi.calculate_areas(), dtype=np.float64)


def plan_viewpoints(
    center: ArrayLike,
    radius_m: float,
    subdivisions: int,
    elevation_min_deg: float = 20.0,
    elevation_max_deg: float = 80.0,
) -> list[Viewpoint]:
    """Plan icosphere viewpoints at ``radius_m`` around ``center`` within an elevation band.

    ``center`` is (3,) in the base frame (m). Keeps the icosphere vertices whose elevation
    (degrees above the horizontal plane through the centre, base z up) lies in the inclusive
    range [elevation_min_deg, elevation_max_deg]. Returns them sorted by ``view_id``, each
    with a camera pose looking at the centre. Raises ValueError naming the offending argument
    if radius_m <= 0, subdivisions is outside 0..MAX_SUBDIVISIONS, or not
    0 <= elevation_min_deg <= elevation_max_deg <= 90.
    """
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (3,) or not np.all(np.isfinite(c)):
        raise ValueError(f"center must be a finite (3,) vector, got {center!r}")
    if not (np.isfinite(radius_m) and radius_m > 0.0):
        raise ValueError(f"radius_m must be a finite positive distance, got {radius_m!r}")
    subdivisions = _check_subdivisions(subdivisions)
    if not 0.0 <= elevation_min_deg <= 90.0:
        raise ValueError(f"elevation_min_deg must be in [0, 90], got {elevation_min_deg!r}")
    if not 0.0 <= elevation_max_deg <= 90.0:
        raise ValueError(f"elevation_max_deg must be in [0, 90], got {elevation_max_deg!r}")
    if elevation_min_deg > elevation_max_deg:
        raise ValueError(
            f"elevation_min_deg ({elevation_min_deg!r}) must not exceed "
            f"elevation_max_deg ({elevation_max_deg!r})"
        )

    directions = _icosphere_directions_cached(subdivisions)
    # Clip guards arcsin against |z| exceeding 1 by an ulp after normalization.
    elevations = np.arcsin(np.clip(directions[:, 2], -1.0, 1.0))
    lo = np.deg2rad(elevation_min_deg) - _ELEVATION_SLACK_RAD
    hi = np.deg2rad(elevation_max_deg) + _ELEVATION_SLACK_RAD
    keep = np.flatnonzero((elevations >= lo) & (elevations <= hi))

    viewpoints: list[Viewpoint] = []
    for i in keep:  # flatnonzero is ascending, so the list is sorted by view_id
        d = np.array(directions[i])
        T = look_at(c + radius_m * d, c)
        d.setflags(write=False)
        T.setflags(write=False)
        viewpoints.append(
            Viewpoint(
                view_id=int(i),
                direction=d,
                elevation_rad=float(elevations[i]),
                azimuth_rad=float(np.arctan2(d[1], d[0])),
                T_base_cam=T,
            )
        )
    return viewpoints
