"""Scenario specs: YAML validated on load into frozen pydantic models.

A bad field, type or value raises ``SpecError`` with one line that names the field (as a
dotted path) and what is allowed; the CLI turns it into exit code 2 before any output
directory exists.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scenarios.interfaces import SpecError

BUNDLED_PACKAGE = "scenarios.specs"


class Strict(BaseModel):
    """Base: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CameraSpec(Strict):
    """Pinhole camera: image size in pixels and horizontal field of view in degrees."""

    width: int = Field(256, ge=32, le=4096)
    height: int = Field(256, ge=32, le=4096)
    hfov_deg: float = Field(32.0, gt=1.0, lt=170.0)
    # OpenCV (k1, k2, p1, p2, k3); all zero is a pinhole camera. Real and twin share it.
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

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

    xyz_m: tuple[float, float, float] = (0.05, 0.0, 0.03)
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


class CellSpec(Strict):
    """The cell: robot model, camera, hand-eye transform."""

    robot: Literal["panda", "kuka_iiwa"] = "panda"
    camera: CameraSpec = CameraSpec()
    hand_eye: HandEyeSpec = HandEyeSpec()


class ViewpointSpec(Strict):
    """AVATAR viewpoint set: icosphere level, radius (m), elevation bounds (degrees)."""

    radius_m: float = Field(0.2, gt=0.05, le=1.0)
    subdivisions: int = Field(1, ge=0, le=4)
    elevation_min_deg: float = Field(20.0, ge=0.0, le=90.0)
    elevation_max_deg: float = Field(80.0, ge=0.0, le=90.0)

    @model_validator(mode="after")
    def _ordered(self) -> ViewpointSpec:
        if self.elevation_min_deg > self.elevation_max_deg:
            raise ValueError("elevation_min_deg must be <= elevation_max_deg")
        return self


class PlacementSpec(Strict):
    """Where parts stand on the table (base x, y in m) and how much each placement varies."""

    position_m: tuple[float, float] = (0.5, 0.0)
    position_jitter_mm: float = Field(5.0, ge=0.0, le=100.0)
    yaw_jitter_deg: float = Field(180.0, ge=0.0, le=180.0)


class PartSpec(Strict):
    """The part family, overrides of its parameters (mm), and its placement."""

    category: str = "flange_bearing_seat"
    params: dict[str, float] = Field(default_factory=dict)
    placement: PlacementSpec = PlacementSpec()

    @field_validator("category")
    @classmethod
    def _known_category(cls, v: str) -> str:
        from sim.parts import PART_FAMILIES

        if v not in PART_FAMILIES:
            raise ValueError(f"unknown {v!r}; allowed: {', '.join(sorted(PART_FAMILIES))}")
        return v

    @model_validator(mode="after")
    def _known_params(self) -> PartSpec:
        # Check parameter names and values at load time, not first at build time. make_params
        # raises a SpecError already naming `part.params.<name>`; it is not a ValueError, so
        # pydantic lets it through and parse_scenario adds the source.
        from sim.parts import make_params

        make_params(self.category, self.params)
        return self


class DefectSpec(Strict):
    """Defect kinds cycled over the defective parts, how many per part, size ranges (mm)."""

    kinds: tuple[str, ...] = ("bulge", "sink", "hole", "scratch")
    per_part: int = Field(1, ge=1, le=8)
    sizes_mm: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from sim.defects import DEFECT_KINDS

        if not v:
            raise ValueError("must list at least one kind")
        for k in v:
            if k not in DEFECT_KINDS:
                raise ValueError(f"unknown {k!r}; allowed: {', '.join(sorted(DEFECT_KINDS))}")
        return v

    @field_validator("sizes_mm")
    @classmethod
    def _sizes(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        from sim.defects import DEFECT_KINDS

        for k, (lo, hi) in v.items():
            if k not in DEFECT_KINDS:
                raise ValueError(f"unknown kind {k!r}; allowed: {', '.join(sorted(DEFECT_KINDS))}")
            if not 0 < lo <= hi <= 50:
                raise ValueError(f"{k}: need 0 < min <= max <= 50 mm, got [{lo}, {hi}]")
        return v


class SplitSpec(Strict):
    """How many parts go where: normal training parts, normal and defective test parts."""

    train_normal: int = Field(2, ge=1, le=1000)
    test_normal: int = Field(1, ge=0, le=1000)
    test_defective: int = Field(4, ge=0, le=1000)


class PoseErrorSpec(Strict):
    """RMS translation (mm) and rotation (degrees) of one error source."""

    translation_mm: float = Field(0.0, ge=0.0, le=50.0)
    rotation_deg: float = Field(0.0, ge=0.0, le=10.0)


class ErrorsSpec(Strict):
    """Named pose-error sources (sim.pose_errors): robot, hand-eye, object pose."""

    robot: PoseErrorSpec = PoseErrorSpec()
    hand_eye: PoseErrorSpec = PoseErrorSpec()
    object_pose: PoseErrorSpec = PoseErrorSpec()


class AppearanceSpec(Strict):
    """The benign real-vs-twin appearance gap (see sim.appearance.AppearanceGap)."""

    color_jitter: float = Field(0.05, ge=0.0, le=0.5)
    metallic: tuple[float, float] = (0.2, 0.5)
    roughness: tuple[float, float] = (0.35, 0.6)
    light_jitter_deg: float = Field(20.0, ge=0.0, le=90.0)
    light_intensity: tuple[float, float] = (2.5, 3.5)
    table_jitter: float = Field(0.08, ge=0.0, le=0.5)
    exposure: float = Field(0.08, ge=0.0, le=0.9)
    noise_sigma: float = Field(2.0, ge=0.0, le=50.0)

    @model_validator(mode="after")
    def _ranges(self) -> AppearanceSpec:
        for name in ("metallic", "roughness", "light_intensity"):
            lo, hi = getattr(self, name)
            top = 1.0 if name != "light_intensity" else 100.0
            if not 0.0 <= lo <= hi <= top:
                raise ValueError(f"{name}: need 0 <= min <= max <= {top:g}, got [{lo}, {hi}]")
        return self


class DetectorSpec(Strict):
    """A detector by registered name, with its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        import detectors

        if v not in detectors.available():
            raise ValueError(f"unknown {v!r}; allowed: {', '.join(detectors.available())}")
        return v


class Scenario(Strict):
    """A whole inspection scenario: cell, viewpoints, parts, defects, errors, detectors."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cell: CellSpec = CellSpec()
    viewpoints: ViewpointSpec = ViewpointSpec()
    part: PartSpec = PartSpec()
    defects: DefectSpec = DefectSpec()
    split: SplitSpec = SplitSpec()
    errors: ErrorsSpec = ErrorsSpec()
    appearance: AppearanceSpec = AppearanceSpec()
    detectors: tuple[DetectorSpec, ...] = (
        DetectorSpec(name="rgb_residual"),
        DetectorSpec(name="gradient_residual"),
        DetectorSpec(name="ssim_residual"),
    )

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
        names = [d.name for d in v]
        if len(set(names)) != len(names):
            raise ValueError("each detector may appear once")
        if not names:
            raise ValueError("list at least one detector")
        return v

    def digest(self) -> str:
        """A short hash of the resolved scenario: equal digests mean identical runs."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _field_allowed(loc: tuple[Any, ...]) -> str:
    """Names of the fields allowed at the model that holds ``loc`` (for unknown fields)."""
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return ""
        ann = info.annotation
        args = getattr(ann, "__args__", ())
        model = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if model is None:
            return ""
    return ", ".join(getattr(model, "model_fields", {}))


def _format_error(err: ValidationError) -> str:
    """One line: the first error's dotted field path and what is allowed."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc) or "scenario"
    if first["type"] == "extra_forbidden":
        allowed = _field_allowed(loc)
        msg = f"unknown field; allowed: {allowed}" if allowed else "unknown field"
    else:
        msg = str(first["msg"]).removeprefix("Value error, ")
        if "input" in first and first["type"] not in ("missing",):
            msg += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    return f"{path}: {msg}" + (f" [and {more} more error(s)]" if more else "")


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate a mapping into a Scenario; SpecError with one line on any problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{source}: {_format_error(err)}") from None
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


def load_scenario(name_or_path: str, seed: int | None = None) -> Scenario:
    """Load a bundled scenario by name or a YAML file by path; ``seed`` overrides its seed."""
    bundled = bundled_scenarios()
    path = Path(name_or_path)
    if name_or_path in bundled and not path.exists():
        path = bundled[name_or_path]
    if not path.is_file():
        raise SpecError(
            f"scenario: no bundled scenario or file named {name_or_path!r}; "
            f"bundled: {', '.join(bundled) or 'none'}"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: invalid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read scenario file ({type(exc).__name__})") from None
    if isinstance(data, dict) and seed is not None:
        data = {**data, "seed": seed}
    return parse_scenario(data, str(path))
