"""Core records and protocols shared by sim, detectors and the engine (no heavy imports).

Conventions (docs/architecture.md): metres, radians, seconds; images H x W uint8 RGB; depth float32
metres (0 where nothing was hit); poses are 4x4 float64 ``T_<to>_<from>``; cameras follow
OpenCV (x right, y down, z forward) with a 3x3 intrinsic matrix ``K``.
"""

from __future__ import annotations

import difflib
import reprlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]
ImageU8 = NDArray[np.uint8]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Observation:
    """One camera capture: rgb (H, W, 3) uint8, depth (H, W) float32 metres or None.

    ``K`` is (3, 3) float64; ``T_base_cam`` (4, 4) float64 maps camera coordinates into the
    robot base frame; ``dist`` holds OpenCV distortion (k1, k2, p1, p2, k3) or is None.
    ``mask`` (H, W) bool is the part's foreground where it is known (a render; None for a
    camera image); ``points`` (N, 3) float64 metres in the base frame are the depth
    sensor's points of the part's region, ``point_pixels`` (N,) int64 the flat (row-major)
    pixel each came from. ``meta`` holds what a cell adds, e.g. ``T_base_obj``: the part
    pose the image was taken (real) or rendered (twin) at.
    """

    rgb: ImageU8
    K: FloatArray
    T_base_cam: FloatArray
    depth: Float32Array | None = None
    dist: FloatArray | None = None
    timestamp: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    mask: BoolArray | None = None
    points: FloatArray | None = None
    point_pixels: NDArray[np.int64] | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H) of the image in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class DefectRecord:
    """A defect injected into (or annotated on) a part; ``size_mm`` is its main extent."""

    kind: str
    size_mm: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Flat JSON form: {"kind", "size_mm", **params}."""
        return {"kind": self.kind, "size_mm": float(self.size_mm), **self.params}


@dataclass(frozen=True)
class Sample:
    """One inspection pair: the real observation and the pose-matched twin.

    ``fg_mask`` (H, W) bool is the twin foreground; ``gt_mask`` (H, W) bool marks defect
    pixels in the real image (None when unknown, e.g. on hardware); ``label`` is 1 exactly
    when ``gt_mask`` has a defect pixel (None when unknown). Point clouds, when present, are
    (N, 3) float64 metres in the base frame; ``gt_point_labels`` (N,) bool.
    """

    id: str
    real: Observation
    twin: Observation
    fg_mask: BoolArray
    gt_mask: BoolArray | None
    label: int | None
    part_id: str
    category: str
    view_id: int
    defects: tuple[DefectRecord, ...] = ()
    real_points: FloatArray | None = None
    twin_points: FloatArray | None = None
    gt_point_labels: BoolArray | None = None


@dataclass(frozen=True)
class PartSample:
    """One whole part for a 3D detector: the real points of all its views, fused.

    ``points`` (N, 3) float64 metres in the part's frame as the cell believes it (each
    view's points moved by the inverse of the part pose the cell believed at that view, so
    they carry its sensor noise and its pose errors); ``gt_point_labels`` (N,) bool marks
    the points on a defect (None when unknown, e.g. on hardware); ``label`` is 1 exactly
    when a point is labelled (None when unknown). ``id`` is the part id; ``category`` its family.
    """

    id: str
    category: str
    points: FloatArray
    gt_point_labels: BoolArray | None
    label: int | None
    defects: tuple[DefectRecord, ...] = ()


#: What a detector decides on (its class attribute ``level``): one real/twin pair
#: (``Sample``, an anomaly map per view) or one whole part (``PartSample``, a score per
#: point of its fused cloud). A detector without ``level`` works on views.
LEVELS = ("view", "part")


def detector_level(detector: Any) -> str:
    """``"view"`` or ``"part"``: what ``detector`` (an instance or a class) decides on."""
    level = getattr(detector, "level", "view")
    if level not in LEVELS:
        raise ValueError(f"detector level {level!r}; allowed: {', '.join(LEVELS)}")
    return str(level)


@dataclass(frozen=True)
class Prediction:
    """A detector's output: the ``score`` of the view or part, and where it looked anomalous.

    A view-level detector gives ``anomaly_map`` (H, W) float32 of the real image; a
    part-level (3D) detector gives ``point_scores`` (N,) float32, one per point of the
    part's cloud, and no map.
    """

    score: float
    anomaly_map: Float32Array | None
    point_scores: Float32Array | None = None


@runtime_checkable
class Detector(Protocol):
    """An anomaly detector: fit on normal samples, then predict one sample at a time.

    The samples are ``Sample`` pairs, or ``PartSample`` parts for a detector whose class
    attribute ``level`` is ``"part"`` (``detector_level``): one registry, one engine.
    """

    name: str

    def fit(self, samples: Sequence[Any]) -> None:
        """Learn from normal (label 0) samples; may be a no-op for training-free methods."""
        ...

    def predict(self, sample: Any) -> Prediction:
        """Score one sample: a view's anomaly map has the real image's H x W; a part's
        point scores follow its points."""
        ...


@dataclass(frozen=True)
class PartPlan:
    """One physical part of a scenario: its index, id, split, the defect kinds it carries
    and which of the scenario's part families (``part.families``) it belongs to."""

    index: int
    part_id: str
    split: str
    kinds: tuple[str, ...]
    family: int = 0


@dataclass(frozen=True)
class RenderOutput:
    """Passes from one render: rgb (H, W, 3) uint8, depth (H, W) float32 metres (0 = miss),
    mask (H, W) bool part foreground, labels (H, W) int32 face-label ids (0 = nominal or
    background; see ``mask``)."""

    rgb: ImageU8
    depth: Float32Array
    mask: BoolArray
    labels: NDArray[np.int32]


class Renderer(Protocol):
    """A backend-neutral renderer (pyrender now, Blender next); converts poses internally."""

    def render(
        self,
        scene: Any,
        K: FloatArray,
        image_size: tuple[int, int],
        T_base_cam: FloatArray,
        depth_only: bool = False,
        dist: FloatArray | None = None,
    ) -> RenderOutput:
        """Render ``scene`` seen by an OpenCV camera (K, (W, H), T_base_cam, distortion)."""
        ...


@dataclass(frozen=True)
class PartInfo:
    """The part a cell holds: its id and family, the defects it carries (empty when normal
    or unknown) and what the cell's acquisition found out about it (``meta``: JSON values,
    e.g. the object pose estimate and its error, recorded with every sample)."""

    part_id: str
    category: str
    defects: tuple[DefectRecord, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroundTruth:
    """What only a simulator knows about the last capture: ``real_mask`` (H, W) bool the
    part's pixels in the real image, ``gt_mask`` (H, W) bool its defect pixels,
    ``defect_px`` the ground-truth pixels of each of the part's defects (in ``PartInfo``
    order), ``point_labels`` (N,) bool per real point (None without points)."""

    real_mask: BoolArray
    gt_mask: BoolArray
    defect_px: tuple[int, ...] = ()
    point_labels: BoolArray | None = None


class Cell(Protocol):
    """One inspection cell holding one part, simulated or real: plan, move, capture, render.

    A viewpoint is the camera's planned pose in the part's frame, ``T_obj_cam``: the robot
    reaches it by moving the camera around the part (eye-in-hand) or the part in front of a
    fixed camera (part-in-hand). After a ``move_to`` that returns False, ``last_failure``
    says why (one line: "unreachable (...)", "collision (...)").
    """

    last_failure: str

    def part(self) -> PartInfo:
        """The part in the cell."""
        ...

    def plan_viewpoints(self) -> dict[int, FloatArray]:
        """Planned camera poses ``T_obj_cam`` relative to the part, keyed by view id."""
        ...

    def move_to(self, view_id: int) -> bool:
        """Drive the robot to planned view ``view_id``; False when unreachable or colliding."""
        ...

    def capture(self) -> Observation:
        """Capture the real observation at the pose actually reached."""
        ...

    def render_twin(self) -> Observation:
        """Render the twin at the pose the system believes it reached (with its ``mask``)."""
        ...

    def ground_truth(self) -> GroundTruth | None:
        """The exact ground truth of the last capture; None where unknown (hardware)."""
        ...


class CellSource(Protocol):
    """Builds the cells of one scenario and seed (``scenarios.engine.CELL_KINDS`` names the
    module that makes one for each ``cell.kind``). ``cell`` must be a pure function of its
    arguments, so samples can run in any order and process; a source may cache what is
    expensive (renderers, calibration, the last part) but nothing that changes a result."""

    def cell(self, plan: PartPlan, view_id: int, progress: float) -> Cell:
        """The cell holding part ``plan``, ready to capture view ``view_id``; ``progress``
        (0-1) is the sample's place in the run (for slow drifts)."""
        ...

    def part_files(self, plan: PartPlan) -> dict[str, bytes]:
        """Files that describe part ``plan`` as built (e.g. ``mesh.ply``), for the run dir."""
        ...

    def run_info(self) -> dict[str, Any]:
        """What the cell's set-up measured for the whole run (e.g. hand-eye calibration),
        JSON values, for the manifest."""
        ...

    def close(self) -> None:
        """Release renderers, worker processes and scenes."""
        ...


# Exit codes of the ``twincell`` command (documented in the README and ``twincell --help``).
#: Name prefix of a file being written in a run directory (renamed into place when done);
#: a resume removes what an interrupted writer left with it (``rundir.remove_temporaries``).
TEMP_PREFIX = ".twincell-tmp."

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected failure inside twincell (a bug: please report it)
EXIT_INPUT = 2  # bad input: scenario file, command-line arguments or an existing --out
EXIT_UNSCORED = 3  # the run completed but cannot be scored (no test pair, one class only)
EXIT_EXPECTATION = 4  # `twincell check`: the run completed and an expectation did not hold
EXIT_CELLS_FAILED = 5  # `twincell study`: it finished but some cells failed; rerun retries them
EXIT_HARDWARE = 6  # the hardware stopped the run (link lost, protective stop); rerun resumes
EXIT_INTERRUPTED = 130  # Ctrl-C; finished samples are kept and a rerun resumes

#: Set when the run is asked to stop (Ctrl-C or SIGTERM, by the CLI's handler, for the length
#: of one CLI call) and checked between samples: Python swallows a KeyboardInterrupt that
#: lands while a finalizer (``__del__``, a weakref callback) runs, so the exception alone
#: may not stop a run.
STOP = threading.Event()

#: Longest one-line validation message (field path, what is wrong, what was given).
MESSAGE_CHARS = 200

#: Longest excerpt of a user-given value that an error message may quote.
EXCERPT_CHARS = 40


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable repr of a user-given value, at most ``limit`` characters.

    Error messages quote what the user wrote, but never all of it: a value may be a
    megabyte string or a YAML alias chain that expands to gigabytes when printed. The repr
    is built with bounded depth and width (``reprlib``), so even that costs little.
    """
    r = reprlib.Repr()
    r.maxlevel = 2
    r.maxtuple = r.maxlist = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = 3
    r.maxstring = r.maxlong = r.maxother = limit
    text = "".join(ch if ch.isprintable() else "?" for ch in r.repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def allowed(given: Any, names: Sequence[str], limit: int = 140) -> str:
    """``allowed: a, b, ...`` for an unknown name, at most about ``limit`` characters.

    Names close to ``given`` (a likely typo) come first; a list too long to print whole is
    cut and says how many names it left out, so an error line stays short.
    """
    names = list(names)
    if not names:
        return "allowed: (none)"
    close = difflib.get_close_matches(str(given), names, n=3, cutoff=0.6)
    ordered = close + [n for n in names if n not in close]
    text = ", ".join(ordered)
    if len(text) <= limit:
        return f"allowed: {text}"
    shown: list[str] = []
    for n in ordered:
        if len(", ".join([*shown, n])) > limit - 12:
            break
        shown.append(n)
    return f"allowed: {', '.join(shown)}, ... (+{len(names) - len(shown)} more)"


def path_part(part: Any) -> str:
    """One component of a dotted field path; user-given keys are cut and made printable."""
    if isinstance(part, int):
        return str(part)
    text = str(part)
    if len(text) <= 24 and text.isprintable() and " " not in text and "." not in text:
        return text
    return excerpt(text, 24)


def _allowed_fields(root: Any, loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields allowed by the pydantic model that holds ``loc`` (for unknown fields)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        ann = info.annotation
        model = next(
            (a for a in (ann, *getattr(ann, "__args__", ())) if hasattr(a, "model_fields")), None
        )
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def validation_error_line(err: Any, root: Any = None, prefix: str = "") -> str:
    """One bounded line for a pydantic ``ValidationError``: dotted field path and what is allowed.

    ``root`` is the validated model class (to list the allowed names of an unknown field);
    ``prefix`` is prepended to the path (``"part.params"``). Only the first error is spelled
    out; the input is quoted as a short excerpt.
    """
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    path = ".".join([prefix] * bool(prefix) + [path_part(p) for p in loc]) or "scenario"
    if first["type"] == "extra_forbidden":
        names = _allowed_fields(root, loc) if root is not None else []
        msg = f"unknown field; {allowed(loc[-1], names)}" if names else "unknown field"
    else:
        msg = str(first["msg"]).removeprefix("Value error, ")
        # A whole-model check (empty loc) would quote the whole file: its message says enough.
        if "input" in first and first["type"] != "missing" and loc:
            msg += f" (got {excerpt(first['input'])})"
    more = len(errors) - 1
    tail = f" [and {more} more error(s)]" if more else ""
    room = MESSAGE_CHARS - len(path) - 2 - len(tail)
    if len(msg) > room:  # a long check message plus its quoted input: cut, keep the tail
        msg = msg[: max(room - 3, 20)] + "..."
    return f"{path}: {msg}{tail}"


class TwincellError(Exception):
    """Base of every error twincell raises on purpose; the CLI prints it as one line."""

    exit_code = EXIT_ERROR


class SpecError(TwincellError):
    """A scenario or component spec is invalid; the message names the field and what is allowed."""

    exit_code = EXIT_INPUT


class GeometryError(TwincellError):
    """A geometric construction failed (degenerate pose, failed boolean, empty mesh)."""


class CaptureFailed(TwincellError):
    """One capture could not be made (a crashed or hung render worker, a camera timeout):
    the engine records that sample as failed, with this one-line message, and goes on."""


class RunDirError(TwincellError):
    """The output directory cannot be used (holds another run, not writable, damaged)."""

    exit_code = EXIT_INPUT
