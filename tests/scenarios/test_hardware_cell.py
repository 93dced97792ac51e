"""The hardware and replay cells, end to end through the engine.

- The hardware cell with simulated drivers gives the simulated cell's samples, byte for
  byte (the proof that the swap works; ``hardware-dry-run`` is the bundled one).
- With real drivers (here test doubles at the driver boundary, ``make_robot`` and
  ``make_camera``): a view outside the workspace is refused before any motion; a lost
  connection stops the run cleanly, keeps the finished samples, and a rerun resumes; a
  camera timeout fails one sample; a recording has no ground truth, so it is unscored and
  says so.
- A replay of a run scores exactly as the run; masks drawn later label a hardware
  recording's samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scenarios import engine
from scenarios.drivers import base, hardware
from scenarios.drivers.base import CameraTimeout, Frame, HardwareStopped, Intrinsics
from scenarios.interfaces import EXIT_HARDWARE
from scenarios.report import write_report
from scenarios.rundir import sample_records
from scenarios.spec import load_scenario, parse_scenario

HW: dict[str, Any] = {
    "kind": "hardware",
    "camera": {"width": 96, "height": 96, "hfov_deg": 32},
    "hardware": {
        "robot": {"driver": "sim"},
        "camera": {"driver": "sim"},
        "safety": {
            "workspace_min_m": [0.15, -0.4, 0.03],
            "workspace_max_m": [0.85, 0.4, 0.6],
            "max_speed_m_s": 0.25,
        },
    },
}


def _tiny(**cell: Any) -> Any:
    data = load_scenario("tiny").model_dump(mode="json", exclude_none=True)
    data["cell"] = {**data["cell"], **cell}
    data["expect"] = []
    return parse_scenario(data)


def _files(out: Path) -> dict[str, dict[str, str]]:
    return {r["id"]: r["sha256"] for r in sample_records(out / "samples.jsonl")}


def test_the_hardware_cell_with_sim_drivers_gives_the_simulated_cells_samples(
    tmp_path: Path,
) -> None:
    sim = _tiny()
    hw = _tiny(**HW)
    engine.run_scenario(sim, tmp_path / "sim", progress=False)
    engine.run_scenario(hw, tmp_path / "hw", progress=False)
    a, b = _files(tmp_path / "sim"), _files(tmp_path / "hw")
    assert a and a == b
    ra = {r["id"]: r for r in sample_records(tmp_path / "sim" / "samples.jsonl")}
    rb = {r["id"]: r for r in sample_records(tmp_path / "hw" / "samples.jsonl")}
    assert ra == rb  # poses, labels, defects: the same records
    ma = json.loads((tmp_path / "sim" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "hw" / "metrics.json").read_text())
    assert ma["detectors"] == mb["detectors"]


def test_the_bundled_hardware_dry_run_is_the_quickstart_behind_drivers() -> None:
    hw, qs = load_scenario("hardware-dry-run"), load_scenario("quickstart")
    assert (
        hw.cell.kind == "hardware"
        and hw.cell.hardware is not None
        and hw.cell.hardware.robot.driver == "sim"
    )
    same = ("viewpoints", "part", "defects", "errors", "appearance", "render", "detectors")
    assert all(getattr(hw, k) == getattr(qs, k) for k in same)
    assert hw.cell.camera == qs.cell.camera and hw.cell.hand_eye == qs.cell.hand_eye
    assert engine.sample_table(hw) == engine.sample_table(qs)


class Nobody:
    """An operator who does what is asked at once."""

    def ask(self, message: str) -> None:
        pass


class FakeLifecycle:
    """The lifecycle of the driver test doubles: a state, nothing to connect to."""

    state = "unconfigured"

    def configure(self) -> None:
        self.state = "inactive"

    def activate(self) -> None:
        self.state = "active"

    def deactivate(self) -> None:
        self.state = "inactive" if self.state == "active" else self.state

    def cleanup(self) -> None:
        self.state = "unconfigured"


class FakeArm(FakeLifecycle):
    """A robot driver test double: reaches every pose it is sent, logs each command, and
    loses its connection after ``lose_after`` moves."""

    def __init__(self, lose_after: int | None = None) -> None:
        self.commands: list[np.ndarray] = []
        self.speeds: list[float] = []
        self.lose_after = lose_after
        self.state = "unconfigured"
        # parked above the bench, camera down, inside the workspace
        self.pose = np.diag([1.0, -1.0, -1.0, 1.0])
        self.pose[:3, 3] = (0.45, 0.0, 0.4)
        self.last_failure = ""

    def move_to(self, T: np.ndarray, speed_m_s: float) -> bool:
        assert self.state == "active"
        if self.lose_after is not None and len(self.commands) >= self.lose_after:
            raise HardwareStopped("connection to the UR controller at fake lost (test)")
        self.commands.append(np.asarray(T))
        self.speeds.append(speed_m_s)
        self.pose = np.asarray(T)
        return True

    def read_pose(self) -> np.ndarray:
        return self.pose


class FakeCamera(FakeLifecycle):
    """A camera driver test double: a seeded image per capture, no depth; times out on the
    captures listed in ``timeouts``."""

    def __init__(self, timeouts: tuple[int, ...] = ()) -> None:
        self.n = 0
        self.timeouts = timeouts
        self.state = "unconfigured"

    def intrinsics(self) -> Intrinsics:
        K = np.array([[160.0, 0, 48], [0, 160.0, 48], [0, 0, 1]])
        return Intrinsics(96, 96, K, None)

    def capture(self) -> Frame:
        self.n += 1
        if self.n in self.timeouts:
            raise CameraTimeout("no frame within 5 s (test)")
        rgb = np.random.default_rng(self.n).integers(0, 255, (96, 96, 3), dtype=np.uint8)
        return Frame(rgb, None, float(self.n))


REAL: dict[str, Any] = {
    **HW,
    "depth": {"points": False},
    "hardware": {
        **HW["hardware"],
        "robot": {"driver": "ur", "host": "192.0.2.10"},
        "camera": {"driver": "realsense"},
        "part_pose": {"xyz_m": [0.5, 0.0, 0.0]},
    },
}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    made: dict[str, Any] = {"arm": FakeArm(), "camera": FakeCamera()}
    monkeypatch.setattr(hardware, "make_camera", lambda sc: made["camera"])
    monkeypatch.setattr(hardware, "make_robot", lambda sc, cam, op: (made["arm"], cam))
    monkeypatch.setattr(base, "SDKS", {})  # the doubles need no SDK

    class Nobody:
        def ask(self, message: str) -> None:
            made.setdefault("asked", []).append(message)
            # how many moves the arm had been sent when the operator was asked
            made.setdefault("asked_after", []).append(len(made["arm"].commands))

    monkeypatch.setattr(hardware, "ConsoleOperator", Nobody)
    return made


def test_a_hardware_recording_has_no_ground_truth_and_says_so(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    sc = _tiny(**REAL)
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False, report=write_report)
    records = list(sample_records(tmp_path / "run" / "samples.jsonl"))
    assert records and all(r["label"] is None for r in records)
    assert not (tmp_path / "run" / "samples" / records[0]["id"] / "gt_mask.png").exists()
    assert (
        manifest["status"] == "unscored" and "without ground truth" in manifest["unscored_reason"]
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all(v is None for v in metrics["detectors"]["ssim_residual"].values())
    assert metrics["scores"]["ssim_residual"]["n"] == sum(r["split"] == "test" for r in records)
    assert "without ground truth" in (tmp_path / "run" / "report.md").read_text()
    # the operator was asked to put each part in the fixture; every move at the speed limit
    assert len(fakes["asked"]) == len(engine.plan_parts(sc))
    assert set(fakes["arm"].speeds) == {0.25}
    assert fakes["arm"].state == fakes["camera"].state == "unconfigured"  # cleaned up


def test_a_view_outside_the_workspace_is_refused_before_any_motion(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    data = json.loads(json.dumps(REAL))
    data["hardware"]["safety"]["workspace_min_m"] = [0.15, -0.4, 0.15]  # no low views
    sc = _tiny(**data)
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False)
    dropped = manifest["dropped_viewpoints"]["items"]
    assert dropped and all(d["reason"].startswith("outside the workspace") for d in dropped)
    assert "z " in dropped[0]["reason"] and "min +0.150" in dropped[0]["reason"]
    # nothing was ever sent outside the box
    zs = [T[2, 3] for T in fakes["arm"].commands]
    assert zs and min(zs) >= 0.15


def test_a_lost_connection_stops_the_run_and_a_rerun_resumes(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    sc = _tiny(**REAL)
    fakes["arm"] = FakeArm(lose_after=3)
    with pytest.raises(HardwareStopped) as stop:
        engine.run_scenario(sc, tmp_path / "run", progress=False)
    assert stop.value.exit_code == EXIT_HARDWARE
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "connection" in manifest["error"]
    kept = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert len(kept) == 3
    assert fakes["arm"].state == "unconfigured"  # deactivated and cleaned up on the way out
    fakes["arm"] = FakeArm()
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False)
    assert manifest["status"] == "unscored"
    n = len(engine.sample_table(sc))
    assert len(fakes["arm"].commands) == n - 3  # the finished samples were not redone
    # a rerun of the finished recording reuses everything (no ground truth to re-score)
    fakes["arm"] = FakeArm()
    again = engine.run_scenario(sc, tmp_path / "run", progress=False)
    assert again["status"] == "unscored" and not fakes["arm"].commands


def test_a_camera_timeout_fails_one_sample_and_the_run_goes_on(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    fakes["camera"] = FakeCamera(timeouts=(2,))
    sc = _tiny(**REAL)
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False)
    failed = manifest["failed_samples"]["items"]
    assert len(failed) == 1 and "no frame" in failed[0]["reason"]
    assert (
        manifest["counts"]["train"] + manifest["counts"]["test_unlabelled"]
        == len(engine.sample_table(sc)) - 1
    )


def test_a_replay_scores_exactly_as_the_run(tmp_path: Path) -> None:
    sc = _tiny()
    engine.run_scenario(sc, tmp_path / "run", progress=False)
    replay = parse_scenario(
        {
            "name": "replayed",
            "cell": {"kind": "replay", "replay": {"run": str(tmp_path / "run")}},
            "detectors": [d.name for d in sc.detectors],
        }
    )
    assert engine.sample_table(replay) == engine.sample_table(sc)
    engine.run_scenario(replay, tmp_path / "replay", progress=False)
    a = json.loads((tmp_path / "run" / "metrics.json").read_text())
    b = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    assert a["detectors"] == b["detectors"] and a["parts"] == b["parts"]
    assert _files(tmp_path / "run") == _files(tmp_path / "replay")
    # Drawn masks label points by projecting them into the mask: on a simulated sample,
    # projecting its points into its exact mask gives back its exact point labels.
    from scenarios.drivers.replay import _project_labels
    from scenarios.rundir import load_mask
    from sim.points import read_ply

    r = next(
        r
        for r in sample_records(tmp_path / "run" / "samples.jsonl")
        if r["label"] == 1 and "point_labels.npy" in r["sha256"]
    )
    d = tmp_path / "run" / "samples" / r["id"]
    points, labels = read_ply(d / "real_points.ply")
    assert labels is not None and labels.any()
    projected = _project_labels(points, r, load_mask(d / "gt_mask.png"))
    assert np.array_equal(projected, labels)


def test_a_replay_says_which_of_its_fields_the_recording_overrides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from scenarios.drivers import replay as replay_cell

    sc = _tiny()
    engine.run_scenario(sc, tmp_path / "run", progress=False)
    plain = {
        "name": "replayed",
        "cell": {"kind": "replay", "replay": {"run": str(tmp_path / "run")}},
        "detectors": ["rgb_residual"],
        "decisions": {"k": 1},
    }
    with caplog.at_level(logging.WARNING):
        replay_cell.check(parse_scenario(plain))
    assert not [r for r in caplog.records if "not used" in r.message]
    # a copy of the recording's own scenario, switched to replay: its part,
    # viewpoints and camera are the recording's, so they are named as unused
    copied = sc.model_dump(mode="json", exclude_none=True)
    copied["cell"] = {**copied["cell"], **plain["cell"]}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        replay_cell.check(parse_scenario(copied))
    (line,) = [r.message for r in caplog.records if "not used" in r.message]
    for field in ("viewpoints", "part", "cell.camera"):
        assert field in line
    assert "detectors" not in line and "decisions" not in line


def test_a_missing_render_backend_is_refused_only_where_the_cell_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay renders nothing, real drivers only the twin: Blender missing does not stop
    either for an image it would not render."""
    import importlib.util

    from scenarios.interfaces import SpecError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bpy" else real_find_spec(name, *a),
    )
    sc = _tiny()
    engine.run_scenario(sc, tmp_path / "run", progress=False)
    blender_real = {"real": "blender", "twin": "pyrender"}
    replay = parse_scenario(
        {
            "name": "replayed",
            "cell": {"kind": "replay", "replay": {"run": str(tmp_path / "run")}},
            "render": blender_real,
        }
    )
    engine.check_backends(replay)
    monkeypatch.setattr(base, "SDKS", {})
    engine.check_backends(
        parse_scenario(
            {**_tiny(**REAL).model_dump(mode="json", exclude_none=True), "render": blender_real}
        )
    )
    with pytest.raises(SpecError, match="render.real: blender needs bpy"):
        engine.check_backends(
            parse_scenario(
                {**_tiny(**HW).model_dump(mode="json", exclude_none=True), "render": blender_real}
            )
        )


def test_masks_drawn_later_label_a_hardware_recording(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    from PIL import Image

    engine.run_scenario(_tiny(**REAL), tmp_path / "run", progress=False)
    test = [r for r in sample_records(tmp_path / "run" / "samples.jsonl") if r["split"] == "test"]
    masks = tmp_path / "masks"
    masks.mkdir()
    drawn = np.zeros((96, 96), dtype=np.uint8)
    drawn[40:50, 40:50] = 255
    for r in test:  # every test view: half of them with a defect, half clean
        m = drawn if int(r["view_id"]) % 2 else np.zeros_like(drawn)
        Image.fromarray(m).save(masks / f"{r['id']}.png")
    replay = parse_scenario(
        {
            "name": "annotated",
            "cell": {
                "kind": "replay",
                "replay": {"run": str(tmp_path / "run"), "masks": str(masks)},
            },
            "detectors": ["ssim_residual"],
        }
    )
    manifest = engine.run_scenario(replay, tmp_path / "replay", progress=False)
    labelled = {r["id"]: r["label"] for r in sample_records(tmp_path / "replay" / "samples.jsonl")}
    assert all(labelled[r["id"]] == int(r["view_id"]) % 2 for r in test)
    assert manifest["status"] == "complete"
    metrics = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    assert metrics["detectors"]["ssim_residual"]["i_auroc"] is not None
    assert metrics["detectors"]["ssim_residual"]["p_auroc"] is not None
    # a mask drawn as an opaque RGBA image (black background) marks only its drawn pixels
    rgba = np.zeros((96, 96, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[10:20, 10:20, :3] = 255
    Image.fromarray(rgba, "RGBA").save(masks / f"{test[0]['id']}.png")
    from scenarios.drivers.replay import read_drawn_mask

    assert read_drawn_mask(masks / f"{test[0]['id']}.png").sum() == 100
    # a name that is no sample id is refused before anything is written
    Image.fromarray(drawn).save(masks / "part001_v4.png")
    from scenarios.interfaces import SpecError

    renamed = replay.model_copy(update={"name": "annotated2"})
    with pytest.raises(SpecError, match="names no recorded sample"):
        engine.run_scenario(
            parse_scenario(renamed.model_dump(mode="json", exclude_none=True)),
            tmp_path / "replay2",
            progress=False,
        )
    assert not (tmp_path / "replay2").exists()


def test_a_replay_of_a_missing_run_is_refused() -> None:
    from scenarios.interfaces import SpecError

    with pytest.raises(SpecError, match=r"cell\.replay\.run"):
        parse_scenario({"name": "x", "cell": {"kind": "replay", "replay": {"run": "/no/such/run"}}})


def test_the_dry_run_plans_and_renders_twins_without_moving(tmp_path: Path) -> None:
    data = json.loads(json.dumps(REAL))
    data["hardware"]["safety"]["workspace_min_m"] = [0.15, -0.4, 0.15]
    sc = _tiny(**data)
    plan = hardware.dry_run(sc, tmp_path / "dry", progress=False)
    views = plan["views"]
    assert len(views) == len(engine.planned_view_ids(sc))  # one family: its first part
    ok = [v for v in views if v["status"] == "ok"]
    refused = [v for v in views if v["status"] == "refused"]
    assert ok and refused and plan["refused"] == len(refused)
    assert all(v["reason"].startswith("outside the workspace") for v in refused)
    for v in views:  # refused views are shown too (framed red on the contact sheet)
        assert (tmp_path / "dry" / v["twin"]).is_file()
    assert (tmp_path / "dry" / "dry-run.png").is_file()
    assert json.loads((tmp_path / "dry" / "plan.json").read_text())["refused"] == len(refused)


def test_the_dry_run_rehearses_the_moves_as_the_run_checks_them(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    """The dry run's robot stands still, but its moves are checked along the way as a UR's
    are: a move that swings the camera out of the box is refused (a view dropped; the way
    home noted, where a run would stop), except the first, whose start is not known."""
    from sim.geometry import pose_from_xyz_rpy

    data = json.loads(json.dumps(REAL))
    data["hardware"]["safety"]["workspace_min_m"] = [0.15, -0.4, 0.16]
    data["hardware"]["robot"]["home"] = {"xyz_m": [0.5, 0.0, 0.2], "rpy_deg": [0.0, 180.0, 0.0]}
    sc = _tiny(**data)
    planned = hardware.PlannedRobot()
    source = hardware.HardwareCells(sc, 0, robot=planned, camera=fakes["camera"])
    try:
        source.activate()  # the dry run's robot has no start pose to check
        assert source.path_refusal(pose_from_xyz_rpy((0.5, 0.0, 0.2), (0.0, np.pi, 0.0))) == ""
        planned.move_to(pose_from_xyz_rpy((0.5, 0.0, 0.2), (0.0, 0.0, 0.0)), 0.1)
        # as in the swing test below: half a turn about y dips the camera under z 0.16
        source.placement(engine.plan_parts(sc)[0])
        (reason,) = source.home_refusals
        assert reason.startswith("outside the workspace on the way")
        assert np.allclose(planned.read_pose(), source.home())  # went on, to plan the rest
    finally:
        source.close()
    plan = hardware.dry_run(sc, tmp_path / "dry", progress=False)
    assert plan["home"]["T_base_ee"] == source.home().tolist()
    assert plan["home"]["refused_on_the_way"] == []  # its first move: start unknown


def _write(tmp_path: Path, sc: Any) -> Path:
    import yaml

    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude_none=True)))
    return path


def test_the_cli_stops_with_exit_6_and_one_line_when_the_link_is_lost(
    tmp_path: Path, fakes: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from scenarios.cli import main

    fakes["arm"] = FakeArm(lose_after=2)
    path = _write(tmp_path, _tiny(**REAL))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "-q"]) == EXIT_HARDWARE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "connection" in err[0] and "lost" in err[0]
    assert len(list((tmp_path / "run" / "samples").iterdir())) == 2


def test_a_missing_driver_sdk_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from scenarios.cli import main

    if importlib.util.find_spec("rtde_control") is not None:
        pytest.skip("ur_rtde is installed here")
    path = _write(tmp_path, _tiny(**REAL))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'twincell[ur]'" in err and "cell.hardware.robot.driver" in err
    assert not (tmp_path / "run").exists()


def test_dry_run_is_refused_for_a_simulated_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scenarios.cli import main

    assert main(["run", "tiny", "--dry-run", "--out", str(tmp_path / "d"), "-q"]) == 2
    assert "allowed: hardware" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("hardware", "message"),
    [
        ({"robot": {"driver": "ur"}}, "needs `host`"),
        ({"robot": {"driver": "sim", "host": "x"}}, "not used by the sim driver"),
        ({"camera": {"driver": "opencv", "source": 0}}, "needs `K`"),
        ({"camera": {"driver": "realsense", "dist": [0, 0, 0, 0, 0]}}, "states its own lens"),
        ({"part_pose": {"xyz_m": [0.5, 0, 0]}}, "places its parts itself"),
        ({"safety": {"workspace_min_m": [1, 0, 0], "workspace_max_m": [0, 1, 1]}}, "below"),
        ({"robot": {"driver": "ur", "host": "h"}, "part_pose": None}, "part_pose"),
    ],
)
def test_hardware_fields_are_checked_when_the_scenario_loads(
    hardware: dict[str, Any], message: str
) -> None:
    from scenarios.interfaces import SpecError

    block = json.loads(json.dumps(HW["hardware"]))
    for k, v in hardware.items():
        if v is None:
            block.pop(k, None)
        elif isinstance(v, dict) and k in block:
            block[k] = v if "driver" in v or k == "safety" else {**block[k], **v}
        else:
            block[k] = v
    if block["robot"]["driver"] == "ur" and block["camera"]["driver"] == "sim":
        block["camera"] = {"driver": "realsense"}
    with pytest.raises(SpecError, match=message):
        _tiny(**{**HW, "hardware": block})


def test_a_hardware_block_needs_the_hardware_kind() -> None:
    from scenarios.interfaces import SpecError

    with pytest.raises(SpecError, match="cell.kind: hardware"):
        _tiny(hardware=HW["hardware"])
    with pytest.raises(SpecError, match="needs the `cell.hardware` block"):
        _tiny(kind="hardware")


def test_a_turntable_cell_reaches_the_views_on_its_cameras_ring(
    tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an arm: a fixed camera over a manual turntable (the real turntable driver,
    the fake camera). The views at the camera's elevation are reached by turning the
    platter (the operator is asked to); the others are dropped with the driver's reason."""
    from scipy.spatial.transform import Rotation

    from scenarios.drivers.fixed import TurntableDriver

    monkeypatch.setattr(
        hardware,
        "make_robot",
        lambda sc, cam, op: (
            TurntableDriver(hardware._pose(sc.cell.hardware.robot.camera_pose), op),
            cam,
        ),
    )
    base = _tiny(**REAL)
    # The camera stands where one planned view of the part (at the platter's centre) is.
    from sim.cells.eye_in_hand import viewpoints_around
    from sim.cells.factory import build_part, cell_setup

    part = build_part(base, 0, engine.scenario_parts(base)[0])
    center = part.nominal.bounds.mean(axis=0)
    views = viewpoints_around(cell_setup(base, 0).viewpoints, np.eye(4), center)
    first = min(views)
    T0 = views[first]
    rpy = Rotation.from_matrix(T0[:3, :3]).as_euler("xyz", degrees=True)
    data = json.loads(json.dumps(REAL))
    data["hardware"]["robot"] = {
        "driver": "turntable",
        "camera_pose": {"xyz_m": [float(x) for x in T0[:3, 3]], "rpy_deg": [float(a) for a in rpy]},
    }
    data["hardware"].pop("part_pose")
    data["hardware"]["safety"] = {
        "workspace_min_m": [-1, -1, -1],
        "workspace_max_m": [1, 1, 1],
        "max_speed_m_s": 0.1,
    }
    sc = _tiny(**data)
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False)
    records = list(sample_records(tmp_path / "run" / "samples.jsonl"))
    reached = {int(r["view_id"]) for r in records}
    assert first in reached
    elev = {
        v: np.degrees(np.arcsin((T[2, 3] - center[2]) / np.linalg.norm(T[:3, 3] - center)))
        for v, T in views.items()
    }
    for v in reached:  # only views on the camera's ring
        assert abs(elev[v] - elev[first]) < 1.0
    dropped = manifest["dropped_viewpoints"]["items"]
    assert dropped and all(
        "turn" in d["reason"] or "height" in d["reason"] or "axis" in d["reason"] for d in dropped
    )
    turns = [m for m in fakes.get("asked", []) if "turntable" in m]
    assert turns  # the operator turned the platter between views
    # the twin was rendered where the turntable put the camera (identity hand-eye)
    r = records[0]
    assert np.allclose(r["T_base_cam_twin"], r["T_base_cam"])


def test_a_study_cannot_drive_real_hardware_but_sim_drivers_are_fine() -> None:
    from scenarios.interfaces import SpecError
    from scenarios.study import parse_study

    ok = parse_study(
        {
            "name": "s",
            "scenario": "hardware-dry-run",
            "axes": {"errors.hand_eye.rotation_deg": [0, 1]},
        }
    )
    assert len(ok.cells) == 2
    with pytest.raises(SpecError, match="cannot drive real hardware"):
        parse_study(
            {
                "name": "s",
                "scenario": "hardware-dry-run",
                "set": {
                    "cell.hardware.robot": {"driver": "ur", "host": "192.0.2.10"},
                    "cell.hardware.camera": {"driver": "realsense"},
                    "cell.hardware.part_pose": {"xyz_m": [0.5, 0, 0]},
                },
                "axes": {"errors.hand_eye.rotation_deg": [0, 1]},
            }
        )


def test_a_ur_cell_losing_its_link_mid_run_stops_cleanly_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real UR driver on a test double of ur_rtde (tests/scenarios/drivers/test_ur.py),
    through the engine: the link drops on the fourth move; the run stops with exit 6 and
    the three finished samples; the driver has stopped the arm and disconnected; a rerun
    resumes at the fourth sample and finishes."""
    import sys

    from tests.scenarios.drivers.test_ur import FakeController

    ctl = FakeController()
    control, receive = ctl.modules()
    monkeypatch.setitem(sys.modules, "rtde_control", control)
    monkeypatch.setitem(sys.modules, "rtde_receive", receive)
    monkeypatch.setattr(hardware, "make_camera", lambda sc: FakeCamera())
    # The camera is a double; the UR check stays the real one (its modules are the fakes).
    monkeypatch.setattr(base, "SDKS", {"ur": base.SDKS["ur"]})

    monkeypatch.setattr(hardware, "ConsoleOperator", Nobody)

    def drop_on_fourth(pose: list[float]) -> None:
        if len(ctl.commands("moveL")) == 4:
            ctl.connected = False
            raise RuntimeError("RTDE control script is not running!")

    ctl.on_move = drop_on_fourth
    sc = _tiny(**REAL)
    with pytest.raises(HardwareStopped, match="192.0.2.10 lost"):
        engine.run_scenario(sc, tmp_path / "run", progress=False)
    assert len(list((tmp_path / "run" / "samples").iterdir())) == 3
    assert ("disconnect receive",) in ctl.log and ("stopScript",) in ctl.log
    assert all(c[2] == 0.25 for c in ctl.commands("moveL"))  # the scenario's speed limit
    ctl.connected, ctl.on_move, ctl.log = True, None, []
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False)
    assert manifest["status"] == "unscored"  # complete, but without ground truth
    assert len(ctl.commands("moveL")) == len(engine.sample_table(sc)) - 3


def test_an_arm_starting_outside_the_workspace_is_refused(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    fakes["arm"].pose[:3, 3] = (0.05, 0.0, 0.4)  # x below the box's 0.15
    with pytest.raises(HardwareStopped, match="the arm starts outside the workspace"):
        engine.run_scenario(_tiny(**REAL), tmp_path / "run", progress=False)
    assert not fakes["arm"].commands  # nothing was sent
    assert fakes["arm"].state == "unconfigured"


def _with_home(xyz: tuple[float, float, float]) -> Any:
    data = json.loads(json.dumps(REAL))
    # camera down (flange z axis along -z), above the fixture
    data["hardware"]["robot"]["home"] = {"xyz_m": list(xyz), "rpy_deg": [180.0, 0.0, 0.0]}
    data["hardware"]["part_pose"] = {"xyz_m": [0.5, 0.0, 0.0]}
    return _tiny(**data)


def test_the_arm_goes_home_before_each_part_is_put_in(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    sc = _with_home((0.3, 0.3, 0.45))
    engine.run_scenario(sc, tmp_path / "run", progress=False)
    parts = engine.plan_parts(sc)
    assert len(parts) > 1
    asked = fakes["asked"]
    assert len(asked) == len(parts) and all(a.endswith("the arm is at home") for a in asked)
    home = np.array([0.3, 0.3, 0.45])
    at_home = [i for i, T in enumerate(fakes["arm"].commands) if np.allclose(T[:3, 3], home)]
    # once per part: home, then the operator is asked, then that part's views
    assert fakes["asked_after"] == [i + 1 for i in at_home]
    views = np.split(np.arange(len(fakes["arm"].commands)), at_home)[1:]
    assert len(views) == len(parts) and all(len(v) > 1 for v in views)
    # without a home the operator is told the arm stays where it is
    fakes["asked"] = []
    engine.run_scenario(_tiny(**REAL), tmp_path / "run2", progress=False)
    assert fakes["asked"] and all("keep clear of it" in a for a in fakes["asked"])


def test_a_home_outside_the_workspace_is_refused_before_anything_moves(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    from scenarios.interfaces import SpecError

    with pytest.raises(
        SpecError, match=r"cell\.hardware\.robot\.home: outside the workspace at home"
    ):
        engine.run_scenario(_with_home((0.3, 0.3, 0.9)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    # the flange inside, the camera (0.05 m off it, pointing along +x) past the box's x max
    with pytest.raises(SpecError, match=r"home: outside the workspace at home \(camera"):
        engine.run_scenario(_with_home((0.84, 0.0, 0.45)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() and not fakes["arm"].commands
    # the dry run checks it too
    with pytest.raises(SpecError, match=r"home: outside the workspace at home \(camera"):
        hardware.dry_run(_with_home((0.84, 0.0, 0.45)), tmp_path / "dry", progress=False)
    with pytest.raises(SpecError, match="`home` is not used by the sim driver"):
        data = json.loads(json.dumps(HW))
        data["hardware"]["robot"]["home"] = {"xyz_m": [0.3, 0.3, 0.45]}
        _tiny(**data)


def test_an_arm_that_cannot_go_home_stops_the_run_before_the_operator_reaches_in(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    # the controller refuses the move home
    real_move = fakes["arm"].move_to

    def refuse_home(T: np.ndarray, speed_m_s: float) -> bool:
        if np.allclose(T[:3, 3], (0.3, 0.3, 0.45)):
            fakes["arm"].last_failure = "the controller refused the pose (test)"
            return False
        return real_move(T, speed_m_s)

    fakes["arm"].move_to = refuse_home
    with pytest.raises(HardwareStopped, match="did not go home.*refused the pose"):
        engine.run_scenario(_with_home((0.3, 0.3, 0.45)), tmp_path / "run", progress=False)
    assert "asked" not in fakes  # nobody was asked to reach in
    # the way home leaves the box (the camera dips below z min on the way)
    fakes["arm"].move_to = real_move
    data = json.loads(json.dumps(REAL))
    data["hardware"]["safety"]["workspace_min_m"] = [0.15, -0.4, 0.16]
    # as in the test below: turning the flange half a turn about y swings the camera low
    data["hardware"]["robot"]["home"] = {"xyz_m": [0.45, 0.0, 0.2], "rpy_deg": [0.0, 180.0, 0.0]}
    fakes["arm"].pose = np.eye(4)
    fakes["arm"].pose[:3, 3] = (0.45, 0.0, 0.2)
    with pytest.raises(HardwareStopped, match="the way to cell.hardware.robot.home: outside"):
        engine.run_scenario(_tiny(**data), tmp_path / "run2", progress=False)
    assert not fakes["arm"].commands and "asked" not in fakes


def test_a_move_whose_camera_swings_out_of_the_box_on_the_way_is_refused(
    fakes: dict[str, Any],
) -> None:
    """A linear move keeps the flange on a straight line, but the camera, off the flange,
    swings with the interpolated orientation: both ends inside the box is not enough."""
    from sim.geometry import pose_from_xyz_rpy

    data = json.loads(json.dumps(REAL))
    data["hardware"]["safety"]["workspace_min_m"] = [0.15, -0.4, 0.16]
    sc = _tiny(**data)
    source = hardware.HardwareCells(sc, 0, robot=fakes["arm"], camera=fakes["camera"])
    start = pose_from_xyz_rpy((0.5, 0.0, 0.2), (0.0, 0.0, 0.0))
    fakes["arm"].pose = start
    try:
        source.activate()
        # hand-eye (0.05, 0, 0.03): the camera is at z 0.23 at the start, 0.17 at the end
        end = pose_from_xyz_rpy((0.5, 0.0, 0.2), (0.0, np.pi, 0.0))
        reason = source.path_refusal(end)
        assert reason.startswith("outside the workspace on the way")
        assert "z " in reason and "min +0.160" in reason
        same = pose_from_xyz_rpy((0.5, 0.0, 0.25), (0.0, 0.0, 0.0))
        assert source.path_refusal(same) == ""
    finally:
        source.close()


def test_the_hardware_and_replay_cells_meet_the_shared_cell_contract(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    from scenarios.checks import check_camera_driver, check_cell, check_robot_driver

    for data in (HW, REAL):  # sim drivers (with ground truth), test-double drivers (none)
        sc = _tiny(**data)
        plan = engine.plan_parts(sc)[-1]
        source = hardware.open_cells(sc, 0)
        try:
            check_cell(source.cell(plan, engine.planned_view_ids(sc)[0], 0.0))
        finally:
            source.close()
    engine.run_scenario(_tiny(), tmp_path / "run", progress=False)
    replay = parse_scenario(
        {"name": "r", "cell": {"kind": "replay", "replay": {"run": str(tmp_path / "run")}}}
    )
    from scenarios.drivers.replay import open_cells as open_replay

    source_r = open_replay(replay, 0)
    plan = engine.plan_parts(replay)[-1]
    for v in engine.planned_view_ids(replay):
        cell = source_r.cell(plan, v, 0.0)
        if cell.move_to(v):
            check_cell(cell)
            break
    else:
        raise AssertionError("no recorded view of the last part")
    # the test doubles meet the driver contracts the real drivers are checked against
    check_robot_driver(FakeArm(), [fakes["arm"].pose])
    check_camera_driver(FakeCamera())


def test_a_realsense_timeout_mid_run_fails_one_sample_and_a_rerun_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real RealSense driver on a test double of pyrealsense2, through the engine."""
    import sys

    from tests.scenarios.drivers.test_realsense import FakeRealSense
    from tests.scenarios.drivers.test_realsense import H as RS_H
    from tests.scenarios.drivers.test_realsense import W as RS_W

    dev = FakeRealSense()
    monkeypatch.setitem(sys.modules, "pyrealsense2", dev.module())
    arm = FakeArm()
    monkeypatch.setattr(hardware, "make_robot", lambda sc, cam, op: (arm, cam))
    monkeypatch.setattr(base, "SDKS", {"realsense": base.SDKS["realsense"]})

    monkeypatch.setattr(hardware, "ConsoleOperator", Nobody)
    data = json.loads(json.dumps(REAL))
    data["camera"] = {"width": RS_W, "height": RS_H, "hfov_deg": 32}
    sc = _tiny(**data)
    dev.timeouts = 1  # the first capture gets no frame
    manifest = engine.run_scenario(sc, tmp_path / "run", progress=False)
    failed = manifest["failed_samples"]["items"]
    assert len(failed) == 1 and "no frame" in failed[0]["reason"]
    n = len(engine.sample_table(sc))
    assert len(list((tmp_path / "run" / "samples").iterdir())) == n - 1
    record = next(iter(sample_records(tmp_path / "run" / "samples.jsonl")))
    assert record["K"][0][2] != 0 and record["dist"] is not None  # the device's lens
    again = engine.run_scenario(sc, tmp_path / "run", progress=False)
    assert again["failed_samples"]["count"] == 0
    assert len(list((tmp_path / "run" / "samples").iterdir())) == n
