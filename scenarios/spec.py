"""Scenario specs: YAML validated on load into frozen pydantic models.

A bad field, type or value raises ``SpecError`` with one line that names the file, the field
(as a dotted path) and what is allowed; the CLI turns it into exit code 2 before any output
directory exists. Types are strict (``true`` is not a number, ``"96"`` is not an integer,
``12.7`` is not a count) and every number has a range a real cell could have. Detector
parameters and part parameters are checked here too, by their owners' own validators, so
nothing is found wrong only after the simulation.

The file itself is bounded before it is validated: at most ``MAX_FILE_BYTES`` bytes, nesting
at most ``MAX_DEPTH`` deep and ``MAX_NODES`` values (YAML aliases counted each time they are
used, so an alias chain that would expand to gigabytes is refused in microseconds).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import Strict as NoCoercion

from scenarios.interfaces import SpecError, allowed, excerpt, validation_error_line

BUNDLED_PACKAGE = "scenarios.specs"

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 12
MAX_NODES = 10_000
#: A scenario plans at most this many render pairs (parts x viewpoints); sweeps that need
#: more are studies of several scenarios.
MAX_PAIRS = 100_000
MAX_SEED = 2**31 - 1

# Strict scalar types: a YAML boolean or string is never taken for a number, a float never
# for a count. Integers are accepted where a float is expected.
Num = Annotated[float, NoCoercion()]
Count = Annotated[int, NoCoercion()]
Text = Annotated[str, NoCoercion()]
Flag = Annotated[bool, NoCoercion()]


def _bounded(lo: float, hi: float) -> Any:
    """A strict float in [lo, hi] (for tuple elements, which cannot carry a Field)."""
    return Annotated[float, NoCoercion(), Field(ge=lo, le=hi)]


Metres = _bounded(-2.0, 2.0)
Degrees = _bounded(-180.0, 180.0)


class Strict(BaseModel):
    """Base: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _material_class(v: str, card: bool = False) -> str:
    """``v`` if it names a material class (``sim.appearance.MATERIAL_CLASSES``), or
    ``card`` where that is allowed; ValueError listing them otherwise."""
    from sim.appearance import MATERIAL_CLASSES

    names = (["card"] if card else []) + list(MATERIAL_CLASSES)
    if v not in names:
        raise ValueError(f"unknown material class {excerpt(v)}; {allowed(v, names)}")
    return v


class SensorSpec(Strict):
    """The real camera's sensor and optics (sim.render.camera_model.SensorModel); the twin's
    camera is ideal. Noise is given in 8-bit levels: a machine-vision camera shows 1-3 at
    mid-grey."""

    exposure: Num = Field(0.05, ge=0.0, le=0.5)
    white_balance: Num = Field(0.02, ge=0.0, le=0.3)
    vignetting: Num = Field(0.2, ge=0.0, le=0.9)
    psf_px: Num = Field(0.6, ge=0.0, le=5.0)
    motion_blur_px: Num = Field(0.0, ge=0.0, le=30.0)
    noise_sigma: Num = Field(2.0, ge=0.0, le=10.0)
    read_noise: Num = Field(0.8, ge=0.0, le=10.0)

    @model_validator(mode="after")
    def _read_below_total(self) -> SensorSpec:
        if self.read_noise > self.noise_sigma:
            raise ValueError(
                f"read_noise ({self.read_noise:g}) must be <= noise_sigma ({self.noise_sigma:g}):"
                " read noise is the part of the mid-grey noise left in the dark"
            )
        return self


class CameraSpec(Strict):
    """Pinhole camera: image size in pixels and horizontal field of view in degrees."""

    # 2048 px a side covers the common 5 MP inspection cameras (2448 x 2048 would need
    # cropping); larger frames need many GB per render pair.
    width: Count = Field(256, ge=32, le=2048)
    height: Count = Field(256, ge=32, le=2048)
    hfov_deg: Num = Field(32.0, ge=5.0, le=120.0)
    # OpenCV (k1, k2, p1, p2, k3); all zero is a pinhole camera. Real and twin share it.
    distortion: tuple[Num, Num, Num, Num, Num] = (0.0, 0.0, 0.0, 0.0, 0.0)
    sensor: SensorSpec = SensorSpec()

    @field_validator("distortion", mode="before")
    @classmethod
    def _five(cls, v: Any) -> Any:
        if isinstance(v, list | tuple) and len(v) != 5:
            raise ValueError(f"need 5 values (k1, k2, p1, p2, k3), got {len(v)}")
        return v

    @field_validator("distortion")
    @classmethod
    def _moderate(
        cls, v: tuple[float, float, float, float, float]
    ) -> tuple[float, float, float, float, float]:
        k1, k2, p1, p2, k3 = v
        if abs(k1) > 0.5 or abs(k2) > 0.5 or abs(k3) > 0.5 or abs(p1) > 0.05 or abs(p2) > 0.05:
            raise ValueError("need |k1|, |k2|, |k3| <= 0.5 and |p1|, |p2| <= 0.05")
        return v


class HandEyeSpec(Strict):
    """``T_ee_cam``: camera pose on the flange, translation (m) and roll/pitch/yaw (deg)."""

    xyz_m: tuple[
        _bounded(-0.5, 0.5), _bounded(-0.5, 0.5), _bounded(-0.5, 0.5)  # type: ignore[valid-type]
    ] = (0.05, 0.0, 0.03)
    rpy_deg: tuple[Degrees, Degrees, Degrees] = (0.0, 0.0, 0.0)  # type: ignore[valid-type]


class BoardSpec(Strict):
    """The calibration checkerboard: inner corners (cols x rows) and square size (mm)."""

    cols: Count = Field(9, ge=3, le=30)
    rows: Count = Field(6, ge=3, le=30)
    square_mm: Num = Field(12.0, ge=2.0, le=100.0)

    @model_validator(mode="after")
    def _asymmetric(self) -> BoardSpec:
        if (self.cols + self.rows) % 2 == 0:
            raise ValueError(
                "cols + rows must be odd (one even, one odd): a symmetric board's corner "
                "order is ambiguous"
            )
        return self


class CalibrationSpec(Strict):
    """Hand-eye calibration (``errors.mode: acquisition``): captures of a checkerboard from
    ``poses`` robot poses, solved by OpenCV's ``method``."""

    method: Literal["tsai", "park", "horaud", "andreff", "daniilidis"] = "park"
    poses: Count = Field(16, ge=4, le=60)
    board: BoardSpec = BoardSpec()


class PoseEstimationSpec(Strict):
    """Object pose estimation from one overview image (``errors.mode: acquisition``): the
    overview pose (distance and elevation over the nominal placement) and the template grid
    (icosphere level of view directions, in-plane rolls)."""

    overview_distance_m: Num = Field(0.3, ge=0.12, le=1.0)
    overview_elevation_deg: Num = Field(65.0, ge=20.0, le=90.0)
    subdivisions: Count = Field(2, ge=0, le=3)
    rolls: Count = Field(24, ge=4, le=72)


class DepthSpec(Strict):
    """The RGB-D camera's depth sensor (a RealSense D435-like model, ``sim.points``):
    whether captures carry point clouds, and its stereo noise (disparity RMS, px)."""

    points: Flag = True
    subpixel: Num = Field(0.08, ge=0.0, le=1.0)


class PartInHandSpec(Strict):
    """The part-in-hand cell (PaDiM paper): the robot grasps the part and presents it to a
    fixed camera in ``orientations`` poses, spread on a sphere and shared out between
    ``grasps`` grasp points (the paper: 8 perspectives x 2 grasps = 16 images)."""

    orientations: Count = Field(16, ge=1, le=64)
    grasps: Count = Field(2, ge=1, le=4)
    camera_distance_m: Num = Field(0.25, ge=0.1, le=1.0)


class PoseSpec(Strict):
    """A pose: translation (m) and roll/pitch/yaw (deg, extrinsic xyz)."""

    xyz_m: tuple[Metres, Metres, Metres] = (0.0, 0.0, 0.0)  # type: ignore[valid-type]
    rpy_deg: tuple[Degrees, Degrees, Degrees] = (0.0, 0.0, 0.0)  # type: ignore[valid-type]


class RobotDriverSpec(Strict):
    """What moves the camera relative to the part on a hardware cell (``driver``): ``sim``
    the simulated arm (``cell.robot``) behind the driver interface; ``ur`` a Universal Robots
    arm over RTDE at ``host`` (``home``: where the flange waits, clear of the fixture,
    while the operator puts in the next part); ``turntable`` a fixed camera over a manual
    turntable (``camera_pose``: the camera in the platter frame at 0 deg); ``board`` a fixed
    camera and a hand-held part with a checkerboard (``board``) at ``board_pose`` (the part
    in the board's frame)."""

    driver: Literal["sim", "ur", "turntable", "board"]
    host: Text | None = Field(None, min_length=1, max_length=253)
    timeout_s: Num = Field(5.0, gt=0.0, le=60.0)
    accel_m_s2: Num = Field(0.5, gt=0.0, le=2.0)
    camera_pose: PoseSpec | None = None
    board: BoardSpec | None = None
    board_pose: PoseSpec | None = None
    home: PoseSpec | None = None

    @model_validator(mode="after")
    def _fields_of_driver(self) -> RobotDriverSpec:
        need = {"ur": ("host",), "turntable": ("camera_pose",), "board": ("board", "board_pose")}
        may = {"ur": ("home",)}
        for name in need.get(self.driver, ()):
            if getattr(self, name) is None:
                raise ValueError(f"the {self.driver} driver needs `{name}`")
        for name in ("host", "camera_pose", "board", "board_pose", "home"):
            used = need.get(self.driver, ()) + may.get(self.driver, ())
            if getattr(self, name) is not None and name not in used:
                raise ValueError(f"`{name}` is not used by the {self.driver} driver; remove it")
        return self


class CameraDriverSpec(Strict):
    """The camera of a hardware cell (``driver``): ``sim`` the simulated camera
    (``cell.camera``); ``realsense`` an Intel RealSense (colour + aligned depth, its lens
    from the device); ``opencv`` any OpenCV ``VideoCapture`` ``source`` (a device index or a
    URL/file); ``genicam`` a GenICam camera through its producer file ``cti``. The last two
    need the lens from your calibration: ``K`` (3x3, px) and ``dist`` (k1, k2, p1, p2, k3).
    The image size is ``cell.camera.width`` x ``height``."""

    driver: Literal["sim", "realsense", "opencv", "genicam"]
    serial: Text | None = Field(None, min_length=1, max_length=64)
    source: Count | Text | None = None
    cti: Text | None = Field(None, min_length=1, max_length=1000)
    fps: Count = Field(30, ge=1, le=120)
    timeout_s: Num = Field(5.0, gt=0.0, le=60.0)
    K: tuple[tuple[Num, Num, Num], tuple[Num, Num, Num], tuple[Num, Num, Num]] | None = None
    dist: tuple[Num, Num, Num, Num, Num] | None = None

    @model_validator(mode="after")
    def _fields_of_driver(self) -> CameraDriverSpec:
        need = {"opencv": ("source", "K"), "genicam": ("cti", "K")}
        for name in need.get(self.driver, ()):
            if getattr(self, name) is None:
                raise ValueError(f"the {self.driver} camera needs `{name}`")
        if self.driver in ("sim", "realsense") and (self.K is not None or self.dist is not None):
            raise ValueError(f"the {self.driver} camera states its own lens; remove K and dist")
        if self.source is not None and self.driver != "opencv":
            raise ValueError("`source` is used by the opencv camera only; remove it")
        if self.cti is not None and self.driver != "genicam":
            raise ValueError("`cti` is used by the genicam camera only; remove it")
        if self.K is not None:
            (fx, s, cx), (z0, fy, cy), last = self.K
            if not (fx > 0 and fy > 0 and z0 == 0 and tuple(last) == (0, 0, 1)):
                raise ValueError(
                    "K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 (pixels)"
                )
        if isinstance(self.source, int) and self.source < 0:
            raise ValueError("`source` must be a device index >= 0 or a URL/file")
        return self


class SafetySpec(Strict):
    """Where a hardware cell may move (an axis-aligned box in the robot base frame, metres;
    the flange and the camera must both stay in it) and how fast (m/s, linear)."""

    workspace_min_m: tuple[Metres, Metres, Metres]  # type: ignore[valid-type]
    workspace_max_m: tuple[Metres, Metres, Metres]  # type: ignore[valid-type]
    max_speed_m_s: Num = Field(0.1, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _box(self) -> SafetySpec:
        lo, hi = self.workspace_min_m, self.workspace_max_m
        if any(float(a) >= float(b) for a, b in zip(lo, hi, strict=True)):
            raise ValueError("workspace_min_m must be below workspace_max_m on every axis")
        return self


class HardwareSpec(Strict):
    """A hardware cell (``cell.kind: hardware``): its robot and camera drivers, the safety
    limits, and where the part sits (``part_pose``, the part's pose in the robot base frame
    as your fixture holds it; the ``sim`` robot places its parts itself)."""

    robot: RobotDriverSpec
    camera: CameraDriverSpec
    safety: SafetySpec
    part_pose: PoseSpec | None = None

    @model_validator(mode="after")
    def _part_pose(self) -> HardwareSpec:
        if self.robot.driver == "sim" and self.part_pose is not None:
            raise ValueError("part_pose: the sim robot places its parts itself; remove it")
        if self.robot.driver == "board" and self.part_pose is not None:
            raise ValueError(
                "part_pose: with the board driver the part's frame is the base frame "
                "(robot.board_pose places it on the board); remove it"
            )
        if self.robot.driver == "ur" and self.part_pose is None:
            raise ValueError("part_pose: give the part's pose in the robot base frame")
        if (self.robot.driver == "sim") != (self.camera.driver == "sim"):
            raise ValueError("robot.driver and camera.driver: sim goes with sim")
        return self


class ReplaySpec(Strict):
    """A replayed run (``cell.kind: replay``): the recorded run directory ``run`` and,
    optionally, ``masks``: a directory of defect masks drawn later, ``<sample id>.png``
    (non-zero = defect), that give those samples the ground truth the recording lacks."""

    run: Text = Field(min_length=1, max_length=1000)
    masks: Text | None = Field(None, min_length=1, max_length=1000)
    #: Filled on load: the SHA-256 of the recording's sample index and of the masks (names
    #: and bytes), so a changed recording or a changed mask is another replay (digest).
    sha256: Text | None = None


class CellSpec(Strict):
    """The cell: its kind, robot model, camera, hand-eye transform (the true mount) and how
    the cell acquires its poses; ``hardware`` and ``replay`` configure those kinds."""

    kind: Literal["eye_in_hand", "part_in_hand", "hardware", "replay"] = "eye_in_hand"
    robot: Literal["panda", "kuka_iiwa"] = "panda"
    camera: CameraSpec = CameraSpec()
    hand_eye: HandEyeSpec = HandEyeSpec()
    depth: DepthSpec = DepthSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    pose_estimation: PoseEstimationSpec = PoseEstimationSpec()
    part_in_hand: PartInHandSpec = PartInHandSpec()
    hardware: HardwareSpec | None = None
    replay: ReplaySpec | None = None

    @model_validator(mode="after")
    def _kind_block(self) -> CellSpec:
        for kind in ("hardware", "replay"):
            if (self.kind == kind) != (getattr(self, kind) is not None):
                if self.kind == kind:
                    raise ValueError(f"cell.kind {kind} needs the `cell.{kind}` block")
                raise ValueError(f"`cell.{kind}` is used with cell.kind: {kind} only")
        return self


class ViewpointSpec(Strict):
    """AVATAR viewpoint set: icosphere level, radius (m), elevation bounds (degrees)."""

    radius_m: Num = Field(0.2, gt=0.05, le=1.0)
    subdivisions: Count = Field(1, ge=0, le=4)
    elevation_min_deg: Num = Field(20.0, ge=0.0, le=90.0)
    elevation_max_deg: Num = Field(80.0, ge=0.0, le=90.0)

    @model_validator(mode="after")
    def _ordered(self) -> ViewpointSpec:
        if self.elevation_min_deg > self.elevation_max_deg:
            raise ValueError("elevation_min_deg must be <= elevation_max_deg")
        return self


class PlacementSpec(Strict):
    """Where parts stand on the table (base x, y in m) and how much each placement varies."""

    position_m: tuple[Metres, Metres] = (0.5, 0.0)  # type: ignore[valid-type]
    position_jitter_mm: Num = Field(5.0, ge=0.0, le=100.0)
    yaw_jitter_deg: Num = Field(180.0, ge=0.0, le=180.0)
    # "drop": the part falls from drop_height_mm, tilted up to drop_tilt_deg, and settles
    # in PyBullet (sim.physics); "fixed": it stands upright exactly at the drawn x, y, yaw.
    method: Literal["drop", "fixed"] = "drop"
    drop_height_mm: Num = Field(30.0, ge=0.0, le=500.0)
    drop_tilt_deg: Num = Field(15.0, ge=0.0, le=180.0)


class CadSpec(Strict):
    """The user's own CAD file as a part: path (relative to the scenario file), unit, the
    material class it is made of and the zero-shot split it belongs to. ``sha256`` is
    filled in on load, so a changed file is another scenario."""

    path: Text = Field(min_length=1, max_length=4096)
    unit: Literal["m", "mm", "cm", "in"]
    material: Text = "machined_aluminium"
    split: Literal["base", "novel"] = "novel"
    sha256: Text = ""

    @field_validator("material")
    @classmethod
    def _known_material(cls, v: str) -> str:
        return _material_class(v)


class FamilySpec(Strict):
    """One part family of the run (a registered family or the user's CAD file), its design
    variation and manufacturing tolerance, its defect kinds, and how many parts go where.

    ``variation`` (0-1): how much of the card's design range the instances span (0: every
    part is the nominal design). ``tolerance`` scales the card's manufacturing tolerances
    (1: as stated, 0: exact CAD). ``kinds``: defect kinds for this family's defective parts
    (default: ``defects.kinds``).
    """

    family: Text | None = None
    cad: CadSpec | None = None
    params: dict[Text, Any] = Field(default_factory=dict)
    variation: Num = Field(0.0, ge=0.0, le=1.0)
    tolerance: Num = Field(1.0, ge=0.0, le=3.0)
    kinds: tuple[Text, ...] | None = Field(None, min_length=1, max_length=32)
    train_normal: Count = Field(0, ge=0, le=1000)
    test_normal: Count = Field(0, ge=0, le=1000)
    test_defective: Count = Field(0, ge=0, le=1000)

    @model_validator(mode="after")
    def _one_source(self) -> FamilySpec:
        if (self.family is None) == (self.cad is None):
            raise ValueError("give either family (a registered family) or cad (a file)")
        if self.cad is not None and self.params:
            raise ValueError("a cad part takes no params (its design is the file)")
        return self

    @property
    def n_parts(self) -> int:
        """How many parts of this family the run makes."""
        return self.train_normal + self.test_normal + self.test_defective


class PartSpec(Strict):
    """The parts: ``families`` (each with its counts per split), or the short form of one
    family, ``category`` + ``params`` with the top-level ``split``; and their placement."""

    category: Text | None = None
    params: dict[Text, Any] | None = None
    families: tuple[FamilySpec, ...] = Field((), max_length=16)
    placement: PlacementSpec = PlacementSpec()

    @field_validator("category")
    @classmethod
    def _known_category(cls, v: str | None) -> str | None:
        from sim.parts import PART_FAMILIES

        if v is not None and v not in PART_FAMILIES:
            raise ValueError(f"unknown part family; {allowed(v, sorted(PART_FAMILIES))}")
        return v


class DefectSpec(Strict):
    """Defect kinds cycled over the defective parts, how many per part, size ranges (mm)."""

    kinds: tuple[Text, ...] = Field(("bulge", "sink", "hole", "scratch"), max_length=32)
    per_part: Count = Field(1, ge=1, le=8)
    sizes_mm: dict[Text, tuple[Num, Num]] = Field(default_factory=dict)
    #: Place a kind at a named feature of the part card instead of its default placement.
    at: dict[Text, Text] = Field(default_factory=dict)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from sim.defects import DEFECT_KINDS

        if not v:
            raise ValueError("must list at least one kind")
        for k in v:
            if k not in DEFECT_KINDS:
                raise ValueError(f"unknown {excerpt(k)}; {allowed(k, sorted(DEFECT_KINDS))}")
        return v

    @field_validator("sizes_mm")
    @classmethod
    def _sizes(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        from sim.defects import DEFECT_KINDS

        for k, (lo, hi) in v.items():
            if k not in DEFECT_KINDS:
                raise ValueError(f"unknown kind {excerpt(k)}; {allowed(k, sorted(DEFECT_KINDS))}")
            if not 0 < lo <= hi <= 1000:
                raise ValueError(f"{k}: need 0 < min <= max <= 1000 mm, got [{lo}, {hi}]")
        return v

    @field_validator("at")
    @classmethod
    def _at_kinds(cls, v: dict[str, str]) -> dict[str, str]:
        from sim.defects import DEFECT_KINDS

        for k in v:
            if k not in DEFECT_KINDS:
                raise ValueError(f"unknown kind {excerpt(k)}; {allowed(k, sorted(DEFECT_KINDS))}")
        return v


class SplitSpec(Strict):
    """How many parts go where (the short form of ``part.families`` for one family):
    normal training parts, normal and defective test parts."""

    train_normal: Count = Field(2, ge=1, le=1000)
    test_normal: Count = Field(1, ge=0, le=1000)
    test_defective: Count = Field(4, ge=0, le=1000)


class PoseErrorSpec(Strict):
    """RMS translation (mm) and rotation (degrees) of one error source."""

    translation_mm: Num = Field(0.0, ge=0.0, le=50.0)
    rotation_deg: Num = Field(0.0, ge=0.0, le=10.0)


class ErrorsSpec(Strict):
    """Where the twin's pose errors come from.

    ``mode: acquisition`` (the default) runs what a real cell runs: the robot's
    repeatability from its data sheet, a hand-eye calibration from checkerboard captures
    and an object pose estimate from one overview image (``cell.calibration``,
    ``cell.pose_estimation``); the errors are whatever those methods make. ``mode: model``
    draws them instead from the named Gaussian sources below (sim.pose_errors), for studies
    that want a controlled magnitude. Their defaults are typical real magnitudes
    (docs/scenarios.md gives the sources).
    """

    mode: Literal["acquisition", "model"] = "acquisition"
    # None: the default below where the mode uses the source (resolved at load), nothing
    # where it does not (a source given there is an error: the cell measures it).
    robot: PoseErrorSpec | None = None
    hand_eye: PoseErrorSpec | None = None
    object_pose: PoseErrorSpec | None = None


#: The Gaussian sources' defaults, typical real magnitudes (docs/scenarios.md).
ERROR_DEFAULTS = {
    "robot": PoseErrorSpec(translation_mm=0.05, rotation_deg=0.01),
    "hand_eye": PoseErrorSpec(translation_mm=1.0, rotation_deg=0.2),
    "object_pose": PoseErrorSpec(translation_mm=2.0, rotation_deg=1.0),
}


def modelled_sources(mode: str, cell_kind: str) -> tuple[str, ...]:
    """The error sources drawn from their Gaussian model for this mode and cell: all in
    ``model`` mode; in ``acquisition`` mode none on the eye-in-hand cell (it calibrates,
    estimates and has a data-sheet robot), the grasp (``object_pose``) and the fixed
    camera's extrinsics (``hand_eye``) on the part-in-hand cell."""
    if mode == "model":
        return ("robot", "hand_eye", "object_pose")
    return ("hand_eye", "object_pose") if cell_kind == "part_in_hand" else ()


class AppearanceSpec(Strict):
    """The benign real-vs-twin appearance gap (see sim.appearance.AppearanceGap): the part's
    material (``card``: each family's card material, and its components' own), the
    station's lighting, world, bench and clutter."""

    material: Text = "card"
    finish_jitter: Num = Field(0.05, ge=0.0, le=0.5)
    environment: Literal["none", "studio", "workshop"] = "workshop"
    light_jitter_deg: Num = Field(20.0, ge=0.0, le=90.0)
    light_intensity: tuple[Num, Num] = (2.5, 3.5)
    light_drift_deg: Num = Field(0.0, ge=0.0, le=180.0)
    table: Literal["brushed_steel", "wood", "rubber_mat"] = "brushed_steel"
    table_jitter: Num = Field(0.08, ge=0.0, le=0.5)
    clutter: Count = Field(6, ge=0, le=20)

    @field_validator("material")
    @classmethod
    def _known_material(cls, v: str) -> str:
        return _material_class(v, card=True)

    @model_validator(mode="after")
    def _ranges(self) -> AppearanceSpec:
        lo, hi = self.light_intensity
        if not 0.0 < lo <= hi <= 100.0:
            raise ValueError(f"light_intensity: need 0 < min <= max <= 100 W, got [{lo}, {hi}]")
        return self


class RenderSpec(Strict):
    """Which backend renders each side, and the path tracer's quality.

    ``pyrender`` is the fast raster default; ``blender`` is Cycles on the CPU in a worker
    process (photoreal, about a second a frame). ``samples`` and ``denoise`` apply to
    Blender; a frame that takes longer than ``timeout_s`` is abandoned and its sample
    recorded as failed.
    """

    real: Literal["pyrender", "blender"] = "pyrender"
    twin: Literal["pyrender", "blender"] = "pyrender"
    samples: Count = Field(8, ge=1, le=4096)
    denoise: Flag = True
    timeout_s: Num = Field(120.0, ge=1.0, le=3600.0)


class DecisionSpec(Strict):
    """How a whole part is decided from its views (the PaDiM paper, section 2.4): each
    view's anomaly map gives a score by three rules (maximum, ``percentile``, and the
    cluster rule: a cluster of at least the pixel area of a ``min_defect_mm`` defect, grown
    by the map's smoothing ``kernel_px``), and a part is anomalous when at least ``k`` of
    its views fire."""

    k: Count = Field(2, ge=1, le=64)
    percentile: Num = Field(99.99, gt=0.0, lt=100.0)
    min_defect_mm: Num = Field(0.5, gt=0.0, le=100.0)
    kernel_px: Num = Field(4.0, ge=0.0, le=64.0)


class DetectorSpec(Strict):
    """A detector by registered name, with its parameters, and an optional ``label`` that
    names this entry in the run (its predictions folder, metrics and report rows), so one
    detector can appear twice with different parameters (``padim`` with ``weights: random``
    beside ``padim`` with its pretrained weights; AVATAR's ablations)."""

    name: Text
    label: Text | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    params: dict[Text, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """The entry's name in the run: its label, or else the detector's name."""
        return self.label or self.name

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        import detectors

        if v not in detectors.available():
            raise ValueError(f"unknown detector; {allowed(v, detectors.available())}")
        return v


def _resolve_family(
    f: FamilySpec, i: int, defects: DefectSpec, base_dir: Path, short: bool
) -> FamilySpec:
    """``f`` with its parameters resolved in full (CAD: the file loaded, checked and
    hashed), its defect kinds checked against the part (structural kinds need
    sub-components) and ``defects.at`` features checked against its card."""
    from sim.defects import DEFECT_KINDS, check_applicable
    from sim.parts import get_family, make_params

    where = "part" if short else f"part.families.{i}"
    if f.cad is not None:
        from sim.parts.cad import cad_family, file_sha256

        p = Path(f.cad.path)
        path = p if p.is_absolute() else base_dir / p
        fam = cad_family(path, f.cad.unit, f.cad.material, f.cad.split, where=f"{where}.cad")
        cad = f.cad.model_copy(update={"path": str(path.resolve()), "sha256": file_sha256(path)})
        f = f.model_copy(update={"cad": cad})
        name, params = fam.name, {}
    else:
        assert f.family is not None
        from sim.parts import PART_FAMILIES

        if f.family not in PART_FAMILIES:
            raise SpecError(
                f"{where}.family: unknown {excerpt(f.family)}; "
                + allowed(f.family, sorted(PART_FAMILIES))
            )
        name = f.family
        try:
            resolved = make_params(name, f.params)
        except SpecError as err:
            raise SpecError(str(err).replace("part.params", f"{where}.params", 1)) from None
        # Only the overrides are kept (checked, in their declared types: 25 -> 25.0 for a
        # length), so the family's variation still draws the rest.
        params = {k: getattr(resolved, k) for k in sorted(f.params)}
    fam_obj = get_family(name)
    kinds = f.kinds if f.kinds is not None else defects.kinds
    kinds_where = f"{where}.kinds" if f.kinds is not None else "defects.kinds"
    for k in kinds:
        if k not in DEFECT_KINDS:
            raise SpecError(
                f"{kinds_where}: unknown {excerpt(k)}; {allowed(k, sorted(DEFECT_KINDS))}"
            )
        if f.test_defective:
            try:
                check_applicable(k, [c.name for c in fam_obj.card.components], kinds_where)
            except SpecError as err:
                raise SpecError(f"{err} ({name} has none)") from None
    for k, feature in defects.at.items():
        if k in kinds and f.test_defective and feature not in fam_obj.card.features:
            names = sorted(fam_obj.card.features)
            raise SpecError(
                f"defects.at.{k}: {name} has no feature {excerpt(feature)}; "
                + (allowed(feature, names) if names else "it names no features")
            )
    if f.cad is None:
        return f.model_copy(update={"params": params})
    return f


class Scenario(Strict):
    """A whole inspection scenario: cell, viewpoints, parts, defects, errors, detectors."""

    # The name becomes a directory name (runs/<name>-seed<seed>): short and portable.
    name: Text = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: Text = Field("", max_length=500)
    seed: Count = Field(0, ge=0, le=MAX_SEED)
    cell: CellSpec = CellSpec()
    viewpoints: ViewpointSpec = ViewpointSpec()
    part: PartSpec = PartSpec()
    defects: DefectSpec = DefectSpec()
    split: SplitSpec | None = None
    errors: ErrorsSpec = ErrorsSpec()
    appearance: AppearanceSpec = AppearanceSpec()
    render: RenderSpec = RenderSpec()
    decisions: DecisionSpec = DecisionSpec()
    detectors: tuple[DetectorSpec, ...] = Field(
        (
            DetectorSpec(name="rgb_residual"),
            DetectorSpec(name="gradient_residual"),
            DetectorSpec(name="ssim_residual"),
        ),
        max_length=16,
        validate_default=True,
    )
    # What `twincell check` judges (scenarios.gate): "<detector>.<metric> <op> <value>".
    # Not part of the digest: a changed threshold judges the same run.
    expect: tuple[Text, ...] = Field((), max_length=64)

    @field_validator("detectors", mode="before")
    @classmethod
    def _names_as_specs(cls, v: Any) -> Any:
        # Allow the short form `detectors: [ssim_residual, ...]`.
        if isinstance(v, list | tuple):
            return [{"name": d} if isinstance(d, str) else d for d in v]
        return v

    @field_validator("detectors")
    @classmethod
    def _unique_detectors(cls, v: tuple[DetectorSpec, ...]) -> tuple[DetectorSpec, ...]:
        # A field (not model) validator, so the error names `detectors` and echoes only them.
        import detectors

        names = [d.key for d in v]
        if len(set(names)) != len(names):
            raise ValueError(
                "each detector may appear once (give a repeated one a distinct `label`)"
            )
        if not names:
            raise ValueError("list at least one detector")
        # Each detector checks its own parameters (types and ranges) through the registry,
        # now, before anything runs; a SpecError passes through pydantic untouched. The
        # checked parameters are kept in full, defaults included, so `sigma_px: 2`,
        # `sigma_px: 2.0` and no parameter at all are one scenario with one digest.
        return tuple(
            DetectorSpec(
                name=d.name,
                label=d.label,
                params=detectors.validate_params(d.name, d.params, where=f"detectors.{i}.params"),
            )
            for i, d in enumerate(v)
        )

    @model_validator(mode="after")
    def _resolve_parts(self, info: ValidationInfo) -> Scenario:
        # The short form (part.category, part.params, split) becomes one family, so a
        # resolved scenario has one form; each family's parameters are checked by the
        # family (a CAD file is loaded and checked now), in full, defaults included.
        part = self.part
        if part.families and (part.category is not None or part.params is not None):
            raise ValueError(
                "part: give part.families, or part.category/params with split, not both"
            )
        if part.families and self.split is not None:
            raise ValueError("split: with part.families each family gives its own counts")
        families = part.families
        if not families:
            split = self.split or SplitSpec()
            families = (
                FamilySpec(
                    family=part.category or "flange_bearing_seat",
                    params=part.params or {},
                    **split.model_dump(),
                ),
            )
        base_dir = Path((info.context or {}).get("base_dir", "."))
        resolved = tuple(
            _resolve_family(f, i, self.defects, base_dir, short=not part.families)
            for i, f in enumerate(families)
        )
        if sum(f.n_parts for f in resolved) == 0:
            raise ValueError("part.families: the run has no parts; give some counts")
        new_part = PartSpec(families=resolved, placement=part.placement)
        object.__setattr__(self, "part", new_part)
        object.__setattr__(self, "split", None)
        return self

    @model_validator(mode="after")
    def _replayed_run(self, info: ValidationInfo) -> Scenario:
        # A replayed run (and a directory of drawn masks) is found relative to the
        # scenario file, like a CAD file, and must be a finished twincell run.
        rp = self.cell.replay
        if rp is None:
            return self
        base_dir = Path((info.context or {}).get("base_dir", "."))
        paths = {}
        for name in ("run", "masks"):
            value = getattr(rp, name)
            if value is None:
                continue
            p = Path(value).expanduser()
            p = (p if p.is_absolute() else base_dir / p).resolve()
            if not p.is_dir():
                raise SpecError(f"cell.replay.{name}: no directory {excerpt(value, 80)}")
            paths[name] = str(p)
        run = Path(paths["run"])
        if not (run / "manifest.json").is_file() or not (run / "samples.jsonl").is_file():
            raise SpecError(
                f"cell.replay.run: {excerpt(rp.run, 80)} holds no finished twincell run "
                "(manifest.json and samples.jsonl)"
            )
        h = hashlib.sha256((run / "samples.jsonl").read_bytes())
        if "masks" in paths:
            for m in sorted(Path(paths["masks"]).glob("*.png")):
                h.update(m.name.encode() + b"\0" + m.read_bytes())
        paths["sha256"] = h.hexdigest()
        cell = self.cell.model_copy(update={"replay": rp.model_copy(update=paths)})
        object.__setattr__(self, "cell", cell)
        return self

    @model_validator(mode="after")
    def _errors_by_mode(self) -> Scenario:
        # A Gaussian source the mode does not use is refused (it would be silently
        # ignored); one it uses and that was not given takes its default, so a resolved
        # scenario says exactly which errors are drawn and how large.
        used = modelled_sources(self.errors.mode, self.cell.kind)
        update = {}
        for name in ERROR_DEFAULTS:
            value = getattr(self.errors, name)
            if value is not None and name not in used:
                raise SpecError(
                    f"errors.{name}: not used with errors.mode: {self.errors.mode} on the "
                    f"{self.cell.kind} cell (the cell measures it); remove it or set "
                    "errors.mode: model"
                )
            if value is None and name in used:
                update[name] = ERROR_DEFAULTS[name]
        if update:
            object.__setattr__(self, "errors", self.errors.model_copy(update=update))
        return self

    @model_validator(mode="after")
    def _points_for_part_detectors(self) -> Scenario:
        # A part-level (3D) detector decides on the parts' fused point clouds: a cell
        # without them would simulate everything and then have nothing to give it.
        import detectors

        for i, d in enumerate(self.detectors):
            if detectors.level(d.name) != "part":
                continue
            if not self.cell.depth.points:
                raise SpecError(
                    f"detectors.{i}: {d.name} decides on each part's fused point cloud; set "
                    "cell.depth.points: true (or remove the detector)"
                )
            # Its templates are each family's normal training parts; Cohen's d compares
            # them with each other, so every family with test parts needs two.
            for j, f in enumerate(self.part.families):
                if f.test_normal + f.test_defective and f.train_normal < 2:
                    raise SpecError(
                        f"part.families.{j}.train_normal: {d.name} (detectors.{i}) needs at "
                        f"least 2 normal training parts of each tested family as templates, "
                        f"got {f.train_normal}"
                    )
        return self

    @model_validator(mode="after")
    def _expectations(self) -> Scenario:
        import detectors
        from scenarios.gate import parse_expectation

        levels = {d.key: detectors.level(d.name) for d in self.detectors}
        for i, text in enumerate(self.expect):
            parse_expectation(text, levels, where=f"expect.{i}")
        return self

    @model_validator(mode="after")
    def _bounded_size(self) -> Scenario:
        import numpy as np

        from sim.viewpoints import plan_viewpoints

        vp = self.viewpoints
        n_views = len(
            plan_viewpoints(
                np.zeros(3),
                vp.radius_m,
                vp.subdivisions,
                vp.elevation_min_deg,
                vp.elevation_max_deg,
            )
        )
        if n_views == 0:
            raise ValueError(
                f"viewpoints: no viewpoint of subdivision level {vp.subdivisions} lies in the "
                f"elevation band [{vp.elevation_min_deg:g}, {vp.elevation_max_deg:g}] deg; "
                "widen the band or raise subdivisions"
            )
        n_parts = sum(f.n_parts for f in self.part.families)
        n_pairs = n_parts * n_views
        if n_pairs > MAX_PAIRS:
            raise ValueError(
                f"plans {n_pairs} render pairs ({n_parts} parts x {n_views} views); at most "
                f"{MAX_PAIRS}: fewer parts, fewer subdivisions or a narrower elevation band"
            )
        return self

    def digest(self) -> str:
        """A short hash of the resolved scenario: equal digests mean identical runs."""
        data = self.model_dump(mode="json")
        # An unlabelled detector hashes as before labels existed.
        for det in data["detectors"]:
            if det.get("label") is None:
                det.pop("label", None)
        # How long a frame may take does not change any image: a rerun with a longer
        # timeout resumes the same run (and retries the samples that timed out).
        del data["render"]["timeout_s"]
        # Expectations judge a run; they do not change it.
        del data["expect"]
        # A CAD file is identified by its content, not where it lies; so is a recording
        # (and its drawn masks) a replay plays back.
        for fam in data["part"]["families"]:
            if fam.get("cad"):
                del fam["cad"]["path"]
        if data["cell"].get("replay"):
            data["cell"]["replay"].pop("run", None)
            data["cell"]["replay"].pop("masks", None)
        # How long a driver may wait, how fast the arm moves and where it waits between
        # parts change no image: a rerun with a longer timeout, a lower speed or another
        # home resumes the same recording.
        hw = data["cell"].get("hardware")
        if hw:
            for block, key in (
                ("robot", "timeout_s"),
                ("robot", "accel_m_s2"),
                ("robot", "home"),
                ("camera", "timeout_s"),
                ("safety", "max_speed_m_s"),
            ):
                hw[block].pop(key, None)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_scenario(data: Any, source: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """Validate a mapping into a Scenario; SpecError with one line on any problem.

    ``base_dir`` is where relative paths (a CAD file) are found: the scenario file's folder.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data, context={"base_dir": str(base_dir or Path("."))})
    except ValidationError as err:
        raise SpecError(f"{source}: {validation_error_line(err, Scenario)}") from None
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None


def bundled_scenarios() -> dict[str, Path]:
    """Bundled scenario names and their YAML paths."""
    root = resources.files(BUNDLED_PACKAGE)
    return {
        Path(str(p)).stem: Path(str(p))
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    }


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error, not a silent
    override (the second ``name:`` would otherwise win unseen)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {excerpt(key)}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _short_path(path: Path, limit: int = 80) -> str:
    """``path`` as the user gave it, cut in the middle past ``limit`` characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(path))
    if len(text) <= limit:
        return text
    return text[: limit // 2 - 2] + "..." + text[-(limit // 2 - 1) :]


def check_shape(data: Any, source: str) -> None:
    """Refuse data nested deeper than MAX_DEPTH or holding more than MAX_NODES values.

    Walks the loaded YAML once, counting a node every time it is reached (an alias used ten
    times counts ten times) and stopping at the first limit, so its cost is bounded too.
    """
    budget = MAX_NODES
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise SpecError(f"{source}: more than {MAX_NODES} values (YAML aliases count each use)")
        if depth > MAX_DEPTH:
            raise SpecError(f"{source}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((k, depth + 1) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend((v, depth + 1) for v in node)


def load_scenario(name_or_path: str, seed: int | None = None) -> Scenario:
    """Load a bundled scenario by name or a YAML file by path; ``seed`` overrides its seed."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise SpecError(f"--seed: must be >= 0 and <= {MAX_SEED}, got {seed}")
    data, where, base_dir = load_scenario_data(name_or_path)
    if isinstance(data, dict) and seed is not None:
        data = {**data, "seed": seed}
    return parse_scenario(data, where, base_dir)


def load_scenario_data(
    name_or_path: str, bundled: dict[str, Path] | None = None, kind: str = "scenario"
) -> tuple[Any, str, Path]:
    """The YAML data of a bundled scenario (by name) or a scenario file (by path), not yet
    validated: (data, where it came from for messages, the folder relative paths start
    from). ``bundled``: names to look up (default ``bundled_scenarios()``); ``kind``: what
    the file is, for messages (a study spec is read the same way). SpecError (one line)
    when it cannot be read."""
    if bundled is None:
        bundled = bundled_scenarios()
    path = Path(name_or_path)
    try:
        if name_or_path in bundled and not path.exists():
            path = bundled[name_or_path]
        is_file = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise SpecError(
            f"{kind}: cannot open {excerpt(name_or_path, 60)} ({exc.strerror})"
        ) from None
    where = _short_path(path)
    if not is_file:
        raise SpecError(
            f"{kind}: no bundled {kind} or file named {excerpt(name_or_path, 100)}; "
            f"bundled: {', '.join(bundled) or 'none'}"
        )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"{where}: {size} bytes; a {kind} holds at most {MAX_FILE_BYTES}")
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", "") or ""
        why = f": {problem}" if problem.startswith("duplicate key") else ""
        raise SpecError(f"{where}: invalid YAML{at}{why}") from None
    except RecursionError:
        raise SpecError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{where}: cannot read {kind} file ({type(exc).__name__})") from None
    check_shape(data, where)
    return data, where, path.parent
