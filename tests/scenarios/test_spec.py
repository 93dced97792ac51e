"""Behaviour tests of scenario specs: bundled YAMLs, defaults, seeds, digests, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import detectors
from scenarios import engine
from scenarios.interfaces import SpecError, allowed
from scenarios.spec import Scenario, bundled_scenarios, load_scenario, parse_scenario
from sim.defects import DEFECT_KINDS
from sim.parts import PART_FAMILIES, make_params


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
    # The short form's defaults become one family; the resolved scenario has one form.
    assert sc.part.category is None and sc.part.params is None and sc.split is None
    (fam,) = sc.part.families
    assert fam.family == "flange_bearing_seat"
    assert fam.params == {}  # only overrides are kept; the card holds the nominal values
    assert make_params(fam.family, fam.params).flange_width_mm == 80.0
    assert (fam.variation, fam.tolerance, fam.kinds) == (0.0, 1.0, None)
    assert set(sc.defects.kinds) == {"bulge", "hole", "scratch", "sink"}
    assert (fam.train_normal, fam.test_normal, fam.test_defective) == (2, 1, 4)
    assert sc.appearance.material == "card"
    # By default the cell measures its errors (calibration, pose estimate, data sheet):
    # no Gaussian source is drawn.
    assert sc.errors.mode == "acquisition"
    assert (sc.errors.robot, sc.errors.hand_eye, sc.errors.object_pose) == (None, None, None)
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
    """Overrides are checked and kept in their declared types (25 -> 25.0 for a length);
    nothing else is stored, so the family's variation still draws the rest."""
    sc = parse_scenario({"name": "x", "part": {"params": {"hub_height_mm": 25}}})
    (fam,) = sc.part.families
    assert fam.params == {"hub_height_mm": 25.0}
    assert isinstance(fam.params["hub_height_mm"], float)
    assert make_params(fam.family, fam.params).segments == 64  # from the card


def test_equivalent_params_give_one_digest() -> None:
    """2 and 2.0 are the same scenario (a resume is not refused), in the short form and in
    part.families alike, and the short form is the same scenario as its one family."""
    base = parse_scenario({"name": "x"})
    same = [
        {"name": "x", "detectors": [{"name": d, "params": {"sigma_px": 2}} for d in DEFAULTS]},
        {"name": "x", "detectors": [{"name": d, "params": {"sigma_px": 2.0}} for d in DEFAULTS]},
        {
            "name": "x",
            "part": {"families": [{"family": "flange_bearing_seat", **SHORT_FORM_COUNTS}]},
        },
    ]
    for data in same:
        assert parse_scenario(data).digest() == base.digest(), data
    a = parse_scenario({"name": "x", "part": {"params": {"segments": 64, "hub_height_mm": 20}}})
    b = parse_scenario({"name": "x", "part": {"params": {"segments": 64, "hub_height_mm": 20.0}}})
    assert a.digest() == b.digest()
    # A nominal value written out is an override: it stays fixed when the design varies.
    assert a.digest() != base.digest()


SHORT_FORM_COUNTS = {"train_normal": 2, "test_normal": 1, "test_defective": 4}


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
        ("'dent'", allowed("dent", sorted(DEFECT_KINDS))),
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
        ("'dent'", allowed("dent", sorted(DEFECT_KINDS))),
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
        ("each detector may appear once", "label"),
    ),
    (
        "duplicate-detector-label",
        {
            "name": "x",
            "detectors": [
                {"name": "rgb_residual", "label": "a"},
                {"name": "ssim_residual", "label": "a"},
            ],
        },
        "detectors",
        ("each detector may appear once",),
    ),
    (
        "bad-detector-label",
        {"name": "x", "detectors": [{"name": "rgb_residual", "label": "has space"}]},
        "detectors.0.label",
        ("pattern",),
    ),
    (
        "detector-label-leaving-predictions",
        {"name": "x", "detectors": [{"name": "rgb_residual", "label": ".."}]},
        "detectors.0.label",
        ("pattern",),
    ),
    ("no-detectors", {"name": "x", "detectors": []}, "detectors", ("at least one detector",)),
    (
        "unknown-part-category",
        {"name": "x", "part": {"category": "gear"}},
        "part.category",
        ("'gear'", allowed("gear", sorted(PART_FAMILIES))),
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
    # The allowed list in messages comes from the registry; every registered kind loads
    # (structural kinds on a family with sub-components).
    kinds = sorted(DEFECT_KINDS)
    sc = parse_scenario(
        {"name": "x", "part": {"category": "joint_housing"}, "defects": {"kinds": kinds}}
    )
    assert set(sc.defects.kinds) == set(DEFECT_KINDS)
    # The flange has no sub-components: every other kind loads there.
    flat = [k for k in kinds if not DEFECT_KINDS[k].needs_components]
    assert parse_scenario({"name": "x", "defects": {"kinds": flat}}).defects.kinds == tuple(flat)


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
    """docs/scenarios.md names every field of the scenario (those of each entry of
    ``part.families`` as ``part.families[].<field>`` or by name on its row) and the detector
    parameters. Part parameters are documented by their family's part card
    (``assets/parts``), which names every one with its nominal value."""
    import dataclasses
    import typing

    from pydantic import BaseModel

    from detectors.residual import ResidualParams
    from scenarios.spec import Scenario

    doc = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    missing = []
    # Filled in on load (a CAD file's content hash), never written by the user.
    filled_on_load = {"part.families[].cad.sha256", "cell.replay.sha256"}

    def models_in(ann: Any) -> list[type[BaseModel]]:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [ann]
        return [m for a in typing.get_args(ann) for m in models_in(a)]

    def walk(model: type[BaseModel], prefix: str, loose: bool = False) -> None:
        # ``loose``: fields of a list entry or of the optional short form (``split``) may be
        # named on a shared row or sentence, by their own name.
        for name, info in model.model_fields.items():
            ann = info.annotation
            nested = models_in(ann) if name != "detectors" else []
            if typing.get_origin(ann) is tuple:
                for m in nested:
                    walk(m, f"{prefix}{name}[].", True)
            else:
                optional = type(None) in typing.get_args(ann)
                for m in nested:
                    walk(m, f"{prefix}{name}.", loose or optional)
            full = f"{prefix}{name}"
            if nested or full in filled_on_load or f"`{full}`" in doc:
                continue
            if loose and f"`{name}`" in doc:
                continue
            missing.append(full)

    walk(Scenario, "")
    missing += [n for n in ResidualParams.model_fields if f"`{n}`" not in doc]
    assert not missing, f"docs/scenarios.md lacks {missing}"
    for name, fam in PART_FAMILIES.items():
        params = {f.name for f in dataclasses.fields(fam.params_type)}
        assert params == set(fam.card.dimensions), name
        assert fam.card.title, name


# ----------------------------------------------------------------------------------------------
# Part families: counts per split, the two forms, kinds and features checked per family
# ----------------------------------------------------------------------------------------------


def test_families_with_counts_give_the_zero_shot_protocol() -> None:
    """One family only in training and another only in test: every training part is of the
    first, every test part of the second, and the test family's own kinds are cycled over
    its defective parts."""
    sc = parse_scenario(
        {
            "name": "zero-shot",
            "part": {
                "families": [
                    {"family": "flange_bearing_seat", "variation": 0.5, "train_normal": 3},
                    {
                        "family": "joint_housing",
                        "test_normal": 1,
                        "test_defective": 3,
                        "kinds": ["missing_component", "scratch"],
                    },
                ]
            },
        },
        "bad.yaml",
    )
    base, novel = sc.part.families
    assert (base.family, base.train_normal, base.test_normal, base.test_defective) == (
        "flange_bearing_seat",
        3,
        0,
        0,
    )
    assert (novel.family, novel.train_normal, novel.n_parts) == ("joint_housing", 0, 4)
    assert PART_FAMILIES[base.family].card.split == "base"
    assert PART_FAMILIES[novel.family].card.split == "novel"
    assert sc.split is None and sc.part.category is None
    plans = engine.plan_parts(sc)
    assert [p.part_id for p in plans] == [f"part{i:03d}" for i in range(7)]
    assert [(p.split, p.family) for p in plans] == [("train", 0)] * 3 + [("test", 1)] * 4
    assert [p.kinds for p in plans if p.kinds] == [
        ("missing_component",),
        ("scratch",),
        ("missing_component",),
    ]
    # Each plan builds a part of its own family (the factory's seeded design and defects).
    from sim.cells import factory

    train = factory.build_part(sc, sc.seed, plans[0])
    assert train.category == "flange_bearing_seat" and not train.defects
    test = factory.build_part(sc, sc.seed, plans[4])
    assert test.category == "joint_housing" and test.components
    assert [d.kind for d in test.defects] == ["missing_component"]


def test_both_part_forms_is_an_error() -> None:
    for short in ({"category": "flange_bearing_seat"}, {"params": {"hub_height_mm": 25}}):
        part = {**short, "families": [{"family": "flange_bearing_seat", "train_normal": 1}]}
        msg = _spec_error({"name": "x", "part": part})
        assert "part.families, or part.category/params with split, not both" in msg, msg


def test_split_with_families_is_an_error() -> None:
    msg = _spec_error(
        {
            "name": "x",
            "part": {"families": [{"family": "flange_bearing_seat", "train_normal": 1}]},
            "split": {"train_normal": 2},
        }
    )
    assert "split: with part.families each family gives its own counts" in msg, msg


def test_family_needs_one_source_and_some_parts() -> None:
    msg = _spec_error({"name": "x", "part": {"families": [{"train_normal": 1}]}})
    assert "part.families.0" in msg and "give either family" in msg, msg
    msg = _spec_error({"name": "x", "part": {"families": [{"family": "flange_bearing_seat"}]}})
    assert "the run has no parts" in msg, msg
    msg = _spec_error(
        {"name": "x", "part": {"families": [{"family": "teapot", "train_normal": 1}]}}
    )
    assert "part.families.0.family: unknown 'teapot'" in msg, msg
    assert "flange_bearing_seat" in msg, msg


def test_structural_kind_on_a_family_without_components_is_an_error() -> None:
    """``missing_component`` needs sub-components: on the flange it is refused at load,
    naming ``defects.kinds`` (or the family's own ``kinds``) and the family."""
    msg = _spec_error({"name": "x", "defects": {"kinds": ["hole", "missing_component"]}})
    assert msg.startswith("bad.yaml: defects.kinds: missing_component needs"), msg
    assert "flange_bearing_seat has none" in msg, msg
    fam = {"family": "flange_bearing_seat", "test_defective": 1, "kinds": ["missing_component"]}
    msg = _spec_error({"name": "x", "part": {"families": [fam]}})
    assert msg.startswith("bad.yaml: part.families.0.kinds: missing_component needs"), msg
    # Without defective parts of that family there is nothing to refuse.
    ok = {"family": "flange_bearing_seat", "train_normal": 1}
    sc = parse_scenario(
        {"name": "x", "part": {"families": [ok]}, "defects": {"kinds": ["missing_component"]}}
    )
    assert sc.part.families[0].train_normal == 1


def test_defects_at_an_unknown_feature_lists_the_familys_features() -> None:
    """``defects.at`` must name a feature of the family's card; the error lists them."""
    features = sorted(PART_FAMILIES["flange_bearing_seat"].card.features)
    msg = _spec_error({"name": "x", "defects": {"kinds": ["chip"], "at": {"chip": "rim"}}})
    assert msg.startswith("bad.yaml: defects.at.chip: flange_bearing_seat has no feature 'rim'")
    for feature in features:
        assert feature in msg, (feature, msg)
    sc = parse_scenario({"name": "x", "defects": {"kinds": ["chip"], "at": {"chip": "seat_edge"}}})
    assert sc.defects.at == {"chip": "seat_edge"}


def test_only_overrides_are_kept_in_family_params() -> None:
    """A family's params keep only what the scenario gives, checked and in declared types;
    errors name ``part.families.<i>.params.<name>``."""
    fams = [
        {"family": "flange_bearing_seat", "train_normal": 1},
        {
            "family": "flange_bearing_seat",
            "params": {"hub_height_mm": 28, "segments": 48},
            "test_normal": 1,
        },
    ]
    sc = parse_scenario({"name": "x", "part": {"families": fams}})
    assert sc.part.families[0].params == {}
    assert sc.part.families[1].params == {"hub_height_mm": 28.0, "segments": 48}
    assert isinstance(sc.part.families[1].params["hub_height_mm"], float)
    bad = [
        {"family": "flange_bearing_seat", "params": {"bore_diameter_mm": 100}, "train_normal": 1}
    ]
    msg = _spec_error({"name": "x", "part": {"families": bad}})
    assert "part.families.0.params.bore_diameter_mm: must be < seat_diameter_mm" in msg, msg
    bad = [
        fams[0],
        {"family": "flange_bearing_seat", "params": {"hub_hight_mm": 2}, "test_normal": 1},
    ]
    msg = _spec_error({"name": "x", "part": {"families": bad}})
    assert "part.families.1.params.hub_hight_mm: unknown parameter; allowed: hub_height_mm" in msg


def test_gaussian_error_sources_follow_the_mode() -> None:
    """Model mode fills the realistic defaults; acquisition refuses a source the cell
    measures (it would be silently ignored) but keeps the part-in-hand grasp and camera."""
    sc = parse_scenario({"name": "m", "errors": {"mode": "model"}})
    assert sc.errors.robot is not None and sc.errors.robot.translation_mm == 0.05
    assert sc.errors.hand_eye is not None and sc.errors.hand_eye.translation_mm == 1.0
    assert sc.errors.object_pose is not None and sc.errors.object_pose.rotation_deg == 1.0
    with pytest.raises(
        SpecError, match=r"errors.robot: not used with errors.mode: acquisition on the eye_in_hand"
    ):
        parse_scenario({"name": "a", "errors": {"robot": {"translation_mm": 0.1}}})
    pih = parse_scenario({"name": "p", "cell": {"kind": "part_in_hand"}})
    assert pih.errors.robot is None
    assert pih.errors.object_pose is not None and pih.errors.object_pose.translation_mm == 2.0
    # A resolved scenario parses to itself (the manifest's copy reruns).
    for s in (sc, pih):
        again = parse_scenario(s.model_dump(mode="json"))
        assert again.digest() == s.digest()
