"""Behaviour tests of scenario specs: bundled YAMLs, defaults, seeds, digests, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import detectors
from scenarios.interfaces import SpecError
from scenarios.spec import Scenario, bundled_scenarios, load_scenario, parse_scenario
from sim.defects import DEFECT_KINDS
from sim.parts import PART_FAMILIES


def _spec_error(data: Any) -> str:
    """The message of the SpecError that ``data`` raises; it must be exactly one line."""
    with pytest.raises(SpecError) as info:
        parse_scenario(data, "bad.yaml")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith("bad.yaml: "), msg
    return msg


def _load_error(name_or_path: str, seed: int | None = None) -> str:
    with pytest.raises(SpecError) as info:
        load_scenario(name_or_path, seed=seed)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------------------------
# Bundled scenarios, defaults, seeds, digests
# ----------------------------------------------------------------------------------------------


def test_bundled_includes_quickstart_and_tiny() -> None:
    bundled = bundled_scenarios()
    assert {"quickstart", "tiny"} <= set(bundled)
    for name, path in bundled.items():
        assert path.is_file() and path.suffix == ".yaml" and path.stem == name


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_every_bundled_scenario_loads(name: str) -> None:
    sc = load_scenario(name)
    assert isinstance(sc, Scenario)
    assert sc.name == name
    assert sc.description
    assert sc.detectors
    assert all(d.name in detectors.available() for d in sc.detectors)


def test_bundled_scenario_loads_by_path_too() -> None:
    path = bundled_scenarios()["tiny"]
    assert load_scenario(str(path)) == load_scenario("tiny")


def test_defaults_fill_in() -> None:
    sc = parse_scenario({"name": "minimal"})
    assert sc.seed == 0
    assert sc.description == ""
    assert sc.cell.robot == "panda"
    assert (sc.cell.camera.width, sc.cell.camera.height) == (256, 256)
    assert sc.viewpoints.radius_m == pytest.approx(0.2)
    assert sc.viewpoints.elevation_min_deg <= sc.viewpoints.elevation_max_deg
    assert sc.part.category == "flange_bearing_seat"
    assert sc.part.params["flange_width_mm"] == 80.0  # the family defaults, resolved
    assert set(sc.defects.kinds) == {"bulge", "hole", "scratch", "sink"}
    assert sc.split.train_normal >= 1
    # Realistic pose errors by default (docs/scenarios.md gives the sources).
    assert sc.errors.robot.translation_mm == 0.05
    assert sc.errors.hand_eye.translation_mm == 1.0
    assert (sc.errors.object_pose.translation_mm, sc.errors.object_pose.rotation_deg) == (2, 1)
    assert (sc.render.real, sc.render.twin) == ("pyrender", "pyrender")
    assert [d.name for d in sc.detectors] == ["rgb_residual", "gradient_residual", "ssim_residual"]


def test_partial_nested_mapping_keeps_other_defaults() -> None:
    sc = parse_scenario({"name": "x", "cell": {"camera": {"width": 64}}})
    assert sc.cell.camera.width == 64
    assert sc.cell.camera.height == 256
    assert sc.cell.robot == "panda"


def test_detector_short_and_long_forms_are_equal() -> None:
    short = parse_scenario({"name": "x", "detectors": ["ssim_residual"]})
    long = parse_scenario({"name": "x", "detectors": [{"name": "ssim_residual"}]})
    assert short == long
    assert short.detectors[0].params == {"sigma_px": 2.0, "dilate_px": 2}  # resolved in full


def test_spec_is_immutable() -> None:
    sc = load_scenario("tiny")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        sc.seed = 5  # type: ignore[misc]


def test_seed_override_changes_seed_and_digest() -> None:
    base = load_scenario("tiny")
    other = load_scenario("tiny", seed=base.seed + 7)
    assert other.seed == base.seed + 7
    assert other.digest() != base.digest()
    # Only the seed differs.
    assert other.model_copy(update={"seed": base.seed}) == base


def test_seed_override_of_none_keeps_the_file_seed(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yaml", "name: s\nseed: 42\n")
    assert load_scenario(path).seed == 42
    assert load_scenario(path, seed=None).seed == 42
    assert load_scenario(path, seed=3).seed == 3


def test_digest_is_stable_for_equal_specs(tmp_path: Path) -> None:
    a = load_scenario("quickstart")
    b = load_scenario("quickstart")
    assert a == b and a.digest() == b.digest()
    assert len(a.digest()) == 16 and int(a.digest(), 16) >= 0
    # The same scenario written differently (defaults spelled out, other key order) digests
    # identically: the digest is of the resolved scenario.
    dumped = a.model_dump(mode="json")
    reordered = dict(reversed(list(dumped.items())))
    path = _write(tmp_path / "q.yaml", yaml.safe_dump(reordered))
    c = load_scenario(path)
    assert c == a and c.digest() == a.digest()
    assert (
        parse_scenario({"name": "x"}).digest()
        == parse_scenario({"name": "x", "seed": 0, "cell": {"robot": "panda"}}).digest()
    )


def test_digest_differs_for_different_specs() -> None:
    base = parse_scenario({"name": "x"})
    assert parse_scenario({"name": "x", "split": {"train_normal": 3}}).digest() != base.digest()
    assert parse_scenario({"name": "y"}).digest() != base.digest()


def test_part_params_are_accepted_at_load() -> None:
    sc = parse_scenario({"name": "x", "part": {"params": {"hub_height_mm": 25}}})
    assert sc.part.params["hub_height_mm"] == 25.0 and sc.part.params["segments"] == 64


def test_equivalent_params_give_one_digest() -> None:
    """2 and 2.0, or a default written out, are the same scenario (a resume is not refused)."""
    base = parse_scenario({"name": "x"})
    same = [
        {"name": "x", "detectors": [{"name": d, "params": {"sigma_px": 2}} for d in DEFAULTS]},
        {"name": "x", "detectors": [{"name": d, "params": {"sigma_px": 2.0}} for d in DEFAULTS]},
        {"name": "x", "part": {"params": {"segments": 64, "hub_height_mm": 20}}},
    ]
    for data in same:
        assert parse_scenario(data).digest() == base.digest(), data


DEFAULTS = ("rgb_residual", "gradient_residual", "ssim_residual")


# ----------------------------------------------------------------------------------------------
# Bad inputs: SpecError, one line, naming the dotted field path and what is allowed
# ----------------------------------------------------------------------------------------------

_ALL_TOP = (
    "name",
    "description",
    "seed",
    "cell",
    "viewpoints",
    "part",
    "defects",
    "split",
    "errors",
    "appearance",
    "detectors",
)

BAD_SPECS: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    # (id, data, dotted path, fragments the message must contain: the allowed values/constraint)
    ("unknown-top-level", {"name": "x", "bogus": 1}, "bogus", ("unknown field", *_ALL_TOP)),
    (
        "strong-distortion",
        {"name": "x", "cell": {"camera": {"distortion": [-0.9, 0, 0, 0, 0]}}},
        "cell.camera.distortion",
        ("|k1|, |k2|, |k3| <= 0.5",),
    ),
    (
        "short-distortion",
        {"name": "x", "cell": {"camera": {"distortion": [0.1, 0.0]}}},
        "cell.camera.distortion",
        ("need 5 values (k1, k2, p1, p2, k3)",),
    ),
    (
        "infinite-radius",
        {"name": "x", "viewpoints": {"radius_m": float("inf")}},
        "viewpoints.radius_m",
        ("finite",),
    ),
    (
        "unknown-nested",
        {"name": "x", "viewpoints": {"radius": 0.3}},
        "viewpoints.radius",
        ("unknown field", "radius_m", "subdivisions", "elevation_min_deg", "elevation_max_deg"),
    ),
    (
        "unknown-deep-nested",
        {"name": "x", "cell": {"camera": {"fov": 40}}},
        "cell.camera.fov",
        ("unknown field", "width", "height", "hfov_deg"),
    ),
    (
        "wrong-type",
        {"name": "x", "split": {"train_normal": "two"}},
        "split.train_normal",
        ("integer", "'two'"),
    ),
    (
        "radius-negative",
        {"name": "x", "viewpoints": {"radius_m": -1}},
        "viewpoints.radius_m",
        ("greater than 0.05", "-1"),
    ),
    (
        "subdivisions-too-high",
        {"name": "x", "viewpoints": {"subdivisions": 9}},
        "viewpoints.subdivisions",
        ("less than or equal to 4", "9"),
    ),
    (
        "elevation-order",
        {"name": "x", "viewpoints": {"elevation_min_deg": 70, "elevation_max_deg": 30}},
        "viewpoints",
        ("elevation_min_deg must be <= elevation_max_deg",),
    ),
    (
        "unknown-robot",
        {"name": "x", "cell": {"robot": "ur5"}},
        "cell.robot",
        ("panda", "kuka_iiwa", "ur5"),
    ),
    (
        "unknown-defect-kind",
        {"name": "x", "defects": {"kinds": ["hole", "dent"]}},
        "defects.kinds",
        ("'dent'", "allowed: bulge, hole, scratch, sink"),
    ),
    (
        "no-defect-kinds",
        {"name": "x", "defects": {"kinds": []}},
        "defects.kinds",
        ("at least one kind",),
    ),
    (
        "unknown-size-kind",
        {"name": "x", "defects": {"sizes_mm": {"dent": [1, 2]}}},
        "defects.sizes_mm",
        ("'dent'", "allowed: bulge, hole, scratch, sink"),
    ),
    (
        "unknown-detector",
        {"name": "x", "detectors": ["rgb_residual", "magic"]},
        "detectors.1.name",
        ("'magic'", "allowed: " + ", ".join(detectors.available())),
    ),
    (
        "unknown-detector-long-form",
        {"name": "x", "detectors": [{"name": "magic"}]},
        "detectors.0.name",
        ("'magic'", *detectors.available()),
    ),
    (
        "duplicate-detector",
        {"name": "x", "detectors": ["rgb_residual", "rgb_residual"]},
        "detectors",
        ("each detector may appear once",),
    ),
    ("no-detectors", {"name": "x", "detectors": []}, "detectors", ("at least one detector",)),
    (
        "unknown-part-category",
        {"name": "x", "part": {"category": "gear"}},
        "part.category",
        ("'gear'", "allowed: " + ", ".join(sorted(PART_FAMILIES))),
    ),
    (
        "unknown-part-param",
        {"name": "x", "part": {"params": {"nonsense": 1}}},
        "part.params.nonsense",
        ("unknown parameter", "bolt_hole_diameter_mm", "bore_diameter_mm", "more)"),
    ),
    (
        "impossible-part-param",
        {"name": "x", "part": {"params": {"bore_diameter_mm": 100}}},
        "part.params.bore_diameter_mm",
        ("< seat_diameter_mm", "100"),
    ),
    ("negative-seed", {"name": "x", "seed": -1}, "seed", ("greater than or equal to 0", "-1")),
    ("missing-name", {"seed": 1}, "name", ("required",)),
    ("bad-name", {"name": "has space"}, "name", ("pattern",)),
    (
        "appearance-range",
        {"name": "x", "appearance": {"light_intensity": [8, 2]}},
        "appearance",
        ("light_intensity", "0 < min <= max <= 100"),
    ),
    (
        "render-backend",
        {"name": "x", "render": {"real": "blendr"}},
        "render.real",
        ("pyrender", "blender"),
    ),
    (
        "read-noise-above-total",
        {"name": "x", "cell": {"camera": {"sensor": {"noise_sigma": 1.0, "read_noise": 2.0}}}},
        "cell.camera.sensor",
        ("read_noise", "noise_sigma"),
    ),
]


@pytest.mark.parametrize(
    ("data", "path", "fragments"),
    [pytest.param(d, p, f, id=i) for i, d, p, f in BAD_SPECS],
)
def test_bad_spec_raises_one_line_naming_field_and_allowed(
    data: dict[str, Any], path: str, fragments: tuple[str, ...]
) -> None:
    msg = _spec_error(data)
    assert msg.startswith(f"bad.yaml: {path}: "), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [([1, 2], "got list"), ("just a string", "got str"), (None, "got NoneType"), (3, "got int")],
    ids=["list", "str", "null", "int"],
)
def test_top_level_must_be_a_mapping(data: Any, fragment: str) -> None:
    msg = _spec_error(data)
    assert "expected a mapping of fields" in msg and fragment in msg, msg


def test_all_defect_kinds_are_allowed_by_spec() -> None:
    # The allowed list in messages comes from the registry; every registered kind loads.
    sc = parse_scenario({"name": "x", "defects": {"kinds": sorted(DEFECT_KINDS)}})
    assert set(sc.defects.kinds) == {"bulge", "hole", "scratch", "sink"}


def test_unknown_name_lists_the_close_matches_first() -> None:
    msg = _spec_error({"name": "x", "part": {"params": {"hub_hight_mm": 25}}})
    assert "part.params.hub_hight_mm: unknown parameter; allowed: hub_height_mm, " in msg, msg


def test_several_errors_still_one_line() -> None:
    msg = _spec_error({"name": "x", "seed": -1, "viewpoints": {"subdivisions": 9}})
    assert "more error" in msg


# ----------------------------------------------------------------------------------------------
# Files: YAML syntax, top-level shape, missing files, seed override
# ----------------------------------------------------------------------------------------------


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.yaml", "name: x\nseed: 1\ncell: {robot: panda\nsplit: 3\n")
    msg = _load_error(path)
    assert str(tmp_path / "broken.yaml") in msg
    assert "invalid YAML" in msg
    assert "line " in msg


def test_invalid_yaml_reports_the_offending_line_number(tmp_path: Path) -> None:
    path = _write(tmp_path / "tab.yaml", "name: x\nseed: 1\n\tcell: 1\n")
    msg = _load_error(path)
    assert "invalid YAML at line 3" in msg, msg


def test_yaml_list_at_top_level(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.yaml", "- name: x\n- seed: 1\n")
    msg = _load_error(path)
    assert str(tmp_path / "list.yaml") in msg
    assert "expected a mapping of fields, got list" in msg


def test_yaml_list_at_top_level_with_seed_override(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    assert "got list" in _load_error(path, seed=5)


def test_empty_yaml_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.yaml", "")
    assert "expected a mapping of fields" in _load_error(path)


def test_error_in_file_names_the_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "name: x\nviewpoints: {radius: 0.3}\n")
    msg = _load_error(path)
    assert msg.startswith(f"{tmp_path / 'bad.yaml'}: viewpoints.radius: unknown field"), msg


def test_bad_seed_override_names_seed() -> None:
    msg = _load_error("tiny", seed=-1)
    assert msg == "--seed: must be >= 0 and <= 2147483647, got -1"


def test_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81name: x\n")
    assert str(path) in _load_error(str(path))


@pytest.mark.parametrize("name", ["nonexistent", "missing.yaml", "quickstart.yml"])
def test_unknown_name_or_missing_file_lists_bundled(name: str, tmp_path: Path) -> None:
    target = name if "." not in name else str(tmp_path / name)
    msg = _load_error(target)
    assert repr(target) in msg
    for bundled in bundled_scenarios():
        assert bundled in msg
    assert "bundled: " + ", ".join(bundled_scenarios()) in msg


def test_directory_is_not_a_scenario(tmp_path: Path) -> None:
    msg = _load_error(str(tmp_path))
    assert "no bundled scenario or file named" in msg


def test_scenario_reference_documents_every_field() -> None:
    """docs/scenarios.md names every field of the scenario, part and detector parameters."""
    import dataclasses

    from pydantic import BaseModel

    from detectors.residual import ResidualParams
    from scenarios.spec import Scenario
    from sim.parts import FlangeBearingSeatParams

    doc = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    missing = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel) and name != "detectors":
                walk(ann, f"{prefix}{name}.")
            elif f"`{prefix}{name}`" not in doc:
                missing.append(f"{prefix}{name}")

    walk(Scenario, "")
    names = [f.name for f in dataclasses.fields(FlangeBearingSeatParams)]
    missing += [n for n in [*names, *ResidualParams.model_fields] if f"`{n}`" not in doc]
    assert not missing, f"docs/scenarios.md lacks {missing}"
