"""Tests of the user's own CAD file as a part family (sim.parts.cad)."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trimesh

import sim.parts as parts
from scenarios.interfaces import SpecError
from sim.parts import cad
from sim.parts.cad import cad_family, file_sha256, iso2768_m

WHERE = "part.families.1.cad"


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    """Each test starts and ends with only the built-in families registered."""
    before = dict(parts.PART_FAMILIES)
    yield
    for name in set(parts.PART_FAMILIES) - set(before):
        del parts.PART_FAMILIES[name]
        cad._REGISTERED.pop(name, None)
    parts.families_by_split.cache_clear()


def _spec_error(path: Path, unit: str = "mm") -> str:
    with pytest.raises(SpecError) as err:
        cad_family(path, unit, where=WHERE)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{WHERE}: {path}: "), msg
    return msg


def _check_loaded(family: parts.PartFamily, extents_mm: tuple[float, float, float]) -> None:
    """The family's nominal part: centred, standing on z = 0, closed, of the given extents."""
    model = parts.build_model(family.name, parts.make_params(family.name))
    mesh, _ = parts.manifold_to_trimesh(model.body)
    mesh_mm = mesh.copy()
    mesh_mm.apply_scale(1 / parts.MM)
    lo, hi = mesh_mm.bounds
    assert lo[2] == pytest.approx(0.0, abs=1e-4)
    assert (lo[:2] + hi[:2]) / 2 == pytest.approx([0.0, 0.0], abs=1e-4)
    assert hi - lo == pytest.approx(extents_mm, rel=1e-5)
    assert mesh.is_watertight and mesh.volume > 0
    nominal = [family.card.dimensions[f"extent_{a}_mm"].nominal for a in "xyz"]
    assert nominal == pytest.approx(extents_mm, rel=1e-5)
    assert family.card.features == {} and model.features == {}


def _box_step(sx: float, sy: float, sz: float) -> str:
    """A box (mm, corner at the origin) as a faceted-B-rep STEP AP214 file."""
    lines: list[str] = []

    def add(text: str) -> str:
        lines.append(f"#{len(lines) + 1}={text};")
        return f"#{len(lines)}"

    corner = {
        c: add(f"CARTESIAN_POINT('',({c[0] * sx:g},{c[1] * sy:g},{c[2] * sz:g}))")
        for c in itertools.product((0, 1), repeat=3)
    }
    sides = [  # corner loops counter-clockwise from outside, outward normal, in-plane axis
        ([(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)], (0, 0, -1), (1, 0, 0)),
        ([(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)], (0, 0, 1), (1, 0, 0)),
        ([(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)], (0, -1, 0), (1, 0, 0)),
        ([(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)], (0, 1, 0), (1, 0, 0)),
        ([(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)], (-1, 0, 0), (0, 1, 0)),
        ([(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)], (1, 0, 0), (0, 1, 0)),
    ]
    faces = []
    for loop, normal, ref in sides:
        poly = add("POLY_LOOP('',(" + ",".join(corner[c] for c in loop) + "))")
        bound = add(f"FACE_OUTER_BOUND('',{poly},.T.)")
        axis = add("DIRECTION('',({:g},{:g},{:g}))".format(*normal))
        xdir = add("DIRECTION('',({:g},{:g},{:g}))".format(*ref))
        place = add(f"AXIS2_PLACEMENT_3D('',{corner[loop[0]]},{axis},{xdir})")
        plane = add(f"PLANE('',{place})")
        faces.append(add(f"FACE_SURFACE('',({bound}),{plane},.T.)"))
    shell = add("CLOSED_SHELL('',(" + ",".join(faces) + "))")
    brep = add(f"FACETED_BREP('box',{shell})")
    mm = add("(LENGTH_UNIT()NAMED_UNIT(*)SI_UNIT(.MILLI.,.METRE.))")
    rad = add("(NAMED_UNIT(*)PLANE_ANGLE_UNIT()SI_UNIT($,.RADIAN.))")
    sr = add("(NAMED_UNIT(*)SI_UNIT($,.STERADIAN.)SOLID_ANGLE_UNIT())")
    unc = add(f"UNCERTAINTY_MEASURE_WITH_UNIT(LENGTH_MEASURE(1.E-6),{mm},'distance_accuracy','')")
    ctx = add(
        f"(GEOMETRIC_REPRESENTATION_CONTEXT(3)GLOBAL_UNCERTAINTY_ASSIGNED_CONTEXT(({unc}))"
        f"GLOBAL_UNIT_ASSIGNED_CONTEXT(({mm},{rad},{sr}))REPRESENTATION_CONTEXT('',''))"
    )
    rep = add(f"FACETED_BREP_SHAPE_REPRESENTATION('box',({brep}),{ctx})")
    app = add("APPLICATION_CONTEXT('automotive design')")
    add(f"APPLICATION_PROTOCOL_DEFINITION('international standard','automotive_design',2000,{app})")
    pctx = add(f"PRODUCT_CONTEXT('',{app},'mechanical')")
    product = add(f"PRODUCT('box','box','',({pctx}))")
    formation = add(f"PRODUCT_DEFINITION_FORMATION('','',{product})")
    dctx = add(f"PRODUCT_DEFINITION_CONTEXT('part definition',{app},'design')")
    definition = add(f"PRODUCT_DEFINITION('design','',{formation},{dctx})")
    shape = add(f"PRODUCT_DEFINITION_SHAPE('','',{definition})")
    add(f"SHAPE_DEFINITION_REPRESENTATION({shape},{rep})")
    return (
        "ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION(('box'),'2;1');\n"
        "FILE_NAME('box.step','2024-01-01T00:00:00',(''),(''),'','','');\n"
        "FILE_SCHEMA(('AUTOMOTIVE_DESIGN { 1 0 10303 214 1 1 1 1 }'));\nENDSEC;\nDATA;\n"
        + "\n".join(lines)
        + "\nENDSEC;\nEND-ISO-10303-21;\n"
    )


# --------------------------------------------------------------------------------------------
# Valid files
# --------------------------------------------------------------------------------------------


def test_stl_box_in_mm_loads_centred(tmp_path: Path) -> None:
    path = tmp_path / "widget.stl"
    box = trimesh.creation.box((40.0, 30.0, 20.0))
    box.apply_translation((100.0, -7.0, 55.0))  # off-centre in the file
    box.export(path)
    fam = cad_family(path, "mm", material="cast_iron", split="base")
    assert fam.name == "cad:widget"
    assert fam.card.title == "widget.stl"
    assert fam.card.material == "cast_iron" and fam.card.split == "base"
    assert parts.families_by_split()["base"].count("cad:widget") == 1
    _check_loaded(fam, (40.0, 30.0, 20.0))


def test_obj_cylinder_in_metres(tmp_path: Path) -> None:
    path = tmp_path / "pin.obj"
    cyl = trimesh.creation.cylinder(radius=0.02, height=0.05, sections=64)  # metres
    cyl.export(path)
    fam = cad_family(path, "m")
    ext = cyl.extents * 1000.0
    assert ext == pytest.approx([40.0, 40.0, 50.0])
    _check_loaded(fam, (ext[0], ext[1], ext[2]))


def test_ply_in_cm(tmp_path: Path) -> None:
    path = tmp_path / "ring.ply"
    ring = trimesh.creation.annulus(r_min=1.0, r_max=3.0, height=2.0, sections=48)  # cm
    ring.export(path)
    fam = cad_family(path, "cm")
    ext = ring.extents * 10.0
    _check_loaded(fam, (ext[0], ext[1], ext[2]))


def test_glb_in_inches_is_turned_z_up(tmp_path: Path) -> None:
    path = tmp_path / "block.glb"
    # glTF is y-up: a part 1 x 2 x 0.5 in (x, y, z up) is stored as 1 x 0.5 x 2 (x, y up, z).
    block = trimesh.creation.box((1.0, 0.5, 2.0))
    block.apply_translation((3.0, 0.25, 0.0))
    trimesh.Scene(block).export(path)
    fam = cad_family(path, "in")
    _check_loaded(fam, (25.4, 50.8, 12.7))


def test_glb_scene_transforms_applied(tmp_path: Path) -> None:
    path = tmp_path / "two.glb"
    scene = trimesh.Scene()
    box = trimesh.creation.box((10.0, 10.0, 10.0))
    scene.add_geometry(
        box, node_name="a", transform=trimesh.transformations.translation_matrix((0, 0, 0))
    )
    scene.add_geometry(
        box, node_name="b", transform=trimesh.transformations.translation_matrix((30, 0, 0))
    )
    scene.export(path)
    fam = cad_family(path, "mm")
    _check_loaded(fam, (40.0, 10.0, 10.0))
    assert parts.build_model(fam.name, parts.make_params(fam.name)).body.volume() == (
        pytest.approx(2000.0)
    )


def test_gltf_with_buffers_loads(tmp_path: Path) -> None:
    path = tmp_path / "block.gltf"
    trimesh.Scene(trimesh.creation.box((20.0, 10.0, 30.0))).export(path)
    fam = cad_family(path, "mm")
    _check_loaded(fam, (20.0, 30.0, 10.0))


def test_step_box_loads_in_its_own_unit(tmp_path: Path) -> None:
    pytest.importorskip("cascadio")
    path = tmp_path / "housing.step"
    path.write_text(_box_step(40.0, 30.0, 20.0))
    fam = cad_family(path, "in")  # STEP files carry their own unit: `unit` is not used
    _check_loaded(fam, (40.0, 30.0, 20.0))


def test_step_without_cascadio_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cascadio", None)  # import cascadio -> ImportError
    path = tmp_path / "housing.stp"
    path.write_text(_box_step(40.0, 30.0, 20.0))
    msg = _spec_error(path)
    assert "pip install cascadio" in msg and "STL or GLB" in msg


def test_small_hole_is_filled(tmp_path: Path) -> None:
    path = tmp_path / "holed.stl"
    box = trimesh.creation.box((40.0, 30.0, 20.0))
    box.update_faces(np.arange(len(box.faces)) != 3)  # one triangle missing
    assert not box.is_watertight
    box.export(path)
    fam = cad_family(path, "mm")
    _check_loaded(fam, (40.0, 30.0, 20.0))
    assert parts.build_model(fam.name, parts.make_params(fam.name)).body.volume() == (
        pytest.approx(24000.0)
    )


def test_inverted_and_unmerged_mesh_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "inside_out.obj"
    box = trimesh.creation.box((40.0, 30.0, 20.0))
    tri = box.vertices[box.faces[:, ::-1]].reshape(-1, 3)  # inverted, every face on its own
    soup = trimesh.Trimesh(tri, np.arange(len(tri)).reshape(-1, 3), process=False)
    soup.export(path)
    fam = cad_family(path, "mm")
    _check_loaded(fam, (40.0, 30.0, 20.0))


def test_build_scales_to_the_extents(tmp_path: Path) -> None:
    path = tmp_path / "widget.stl"
    trimesh.creation.box((40.0, 30.0, 20.0)).export(path)
    fam = cad_family(path, "mm")
    params = parts.make_params(fam.name, {"extent_x_mm": 44.0, "extent_z_mm": 10.0})
    bb = parts.build_model(fam.name, params).body.bounding_box()
    assert bb == pytest.approx((-22.0, -15.0, 0.0, 22.0, 15.0, 10.0))
    with pytest.raises(SpecError, match="part.params.extent_y_mm: must be > 0"):
        parts.make_params(fam.name, {"extent_y_mm": 0.0})


def test_card_tolerances_are_iso2768_m(tmp_path: Path) -> None:
    assert [iso2768_m(s) for s in (2, 3, 5, 6, 20, 30, 100, 120, 300, 400, 900, 1000)] == [
        0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.5, 0.5, 0.8, 0.8
    ]  # fmt: skip
    path = tmp_path / "plate.stl"
    trimesh.creation.box((150.0, 25.0, 5.0)).export(path)
    dims = cad_family(path, "mm").card.dimensions
    assert [dims[f"extent_{a}_mm"].tolerance for a in "xyz"] == [0.5, 0.2, 0.1]
    assert all(d.range is None for d in dims.values())


def test_as_built_moves_within_tolerance(tmp_path: Path) -> None:
    path = tmp_path / "widget.stl"
    trimesh.creation.box((40.0, 30.0, 20.0)).export(path)
    fam = cad_family(path, "mm")
    design = parts.make_params(fam.name)
    built = parts.as_built_params(fam.name, design, 1.0, np.random.default_rng(0))
    assert built != design
    assert abs(built.extent_x_mm - 40.0) <= 0.3 and abs(built.extent_z_mm - 20.0) <= 0.2


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def test_same_file_twice_gives_the_same_family(tmp_path: Path) -> None:
    path = tmp_path / "widget.stl"
    trimesh.creation.box((40.0, 30.0, 20.0)).export(path)
    first = cad_family(path, "mm")
    assert cad_family(str(path), "mm") is first
    copy = tmp_path / "again" / "widget.stl"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert cad_family(copy, "mm") is first  # same content, same unit
    assert file_sha256(copy) == file_sha256(path)
    assert len(file_sha256(path)) == 64


def test_different_files_with_one_stem_get_different_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "widget.stl", tmp_path / "b" / "widget.stl"
    a.parent.mkdir()
    b.parent.mkdir()
    trimesh.creation.box((40.0, 30.0, 20.0)).export(a)
    trimesh.creation.box((50.0, 30.0, 20.0)).export(b)
    fa, fb = cad_family(a, "mm"), cad_family(b, "mm")
    assert fa.name == "cad:widget"
    assert fb.name == f"cad:widget-{file_sha256(b)[:8]}"
    assert fb.card.dimensions["extent_x_mm"].nominal == pytest.approx(50.0)
    assert cad_family(b, "mm") is fb and cad_family(a, "mm") is fa
    # The same content in another unit is another part.
    fc = cad_family(a, "cm")
    assert fc.name not in (fa.name, fb.name)
    assert fc.card.dimensions["extent_x_mm"].nominal == pytest.approx(400.0)


def test_odd_file_names_make_plain_family_names(tmp_path: Path) -> None:
    path = tmp_path / "my part v2.0 (final).stl"
    trimesh.creation.box((40.0, 30.0, 20.0)).export(path)
    assert cad_family(path, "mm").name == "cad:my_part_v2_0_final"


# --------------------------------------------------------------------------------------------
# Failures: one test each, one line naming the file and the problem
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    msg = _spec_error(tmp_path / "nothere.stl")
    assert msg.endswith("no such file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.stl"
    path.write_bytes(b"")
    assert _spec_error(path).endswith("empty file (0 bytes)")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.glb"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert _spec_error(path).endswith("not a readable GLB file (ValueError)")


def test_text_is_not_a_mesh(tmp_path: Path) -> None:
    path = tmp_path / "notes.stl"
    path.write_text("these are my notes, not a part\n")
    assert "not a mesh: no triangles found (not a valid STL file?)" in _spec_error(path)


def test_point_cloud_is_not_a_mesh(tmp_path: Path) -> None:
    path = tmp_path / "scan.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((50, 3)) * 40).export(path)
    assert _spec_error(path).endswith("not a mesh: a point cloud of 50 points, no triangles")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "drawing.dxf"
    path.write_text("0\nEOF\n")
    msg = _spec_error(path)
    assert "unsupported file type '.dxf'" in msg
    assert "allowed: .stl, .obj, .ply, .glb, .gltf, .step, .stp" in msg


def test_unknown_unit(tmp_path: Path) -> None:
    path = tmp_path / "widget.stl"
    trimesh.creation.box((40.0, 30.0, 20.0)).export(path)
    msg = _spec_error(path, unit="ft")
    assert "unknown unit 'ft'; allowed: m, mm, cm, in" in msg


def test_flat_mesh_is_degenerate(tmp_path: Path) -> None:
    path = tmp_path / "sheet.obj"
    square = trimesh.Trimesh(
        [[0, 0, 0], [40, 0, 0], [40, 30, 0], [0, 30, 0]], [[0, 1, 2], [0, 2, 3]], process=False
    )
    square.export(path)
    assert _spec_error(path).endswith("degenerate: flat (all vertices in one plane), not a solid")


def test_collinear_mesh_is_degenerate(tmp_path: Path) -> None:
    path = tmp_path / "stick.obj"
    path.write_text("v 0 0 0\nv 10 10 10\nv 20 20 20\nv 30 30 30\nf 1 2 3\nf 2 3 4\n")
    assert _spec_error(path).endswith("degenerate: all vertices on one line")


def test_zero_area_triangles_are_degenerate(tmp_path: Path) -> None:
    # Vertices span 3D but every triangle is a sliver on one edge: no area, no volume.
    path = tmp_path / "slivers.obj"
    path.write_text(
        "v 0 0 0\nv 40 0 0\nv 20 0 0\nv 0 30 0\nv 0 15 0\nv 0 0 20\nv 0 0 10\n"
        "f 1 3 2\nf 1 5 4\nf 1 7 6\n"
    )
    assert _spec_error(path).endswith("degenerate: every triangle has zero area")


def test_inside_out_bodies_are_turned_outward(tmp_path: Path) -> None:
    # Two equal boxes, one inside-out: the volumes cancel until each body is fixed alone.
    path = tmp_path / "pair.stl"
    a = trimesh.creation.box((10.0, 10.0, 10.0))
    b = trimesh.creation.box((10.0, 10.0, 10.0))
    b.invert()
    b.apply_translation((30.0, 0.0, 0.0))
    trimesh.util.concatenate([a, b]).export(path)
    fam = cad_family(path, "mm")
    _check_loaded(fam, (40.0, 10.0, 10.0))


def test_far_too_large_for_its_unit(tmp_path: Path) -> None:
    path = tmp_path / "bracket.stl"
    trimesh.creation.box((120.0, 80.0, 40.0)).export(path)  # millimetre numbers
    msg = _spec_error(path, unit="m")
    assert msg.endswith(
        "1.2e+05 mm across, larger than 1000 mm (a part of an inspection cell): "
        "is the unit mm rather than m?"
    )


def test_far_too_small_for_its_unit(tmp_path: Path) -> None:
    path = tmp_path / "bracket.stl"
    trimesh.creation.box((0.12, 0.08, 0.04)).export(path)  # metre numbers
    msg = _spec_error(path, unit="mm")
    assert msg.endswith("0.12 mm across, smaller than 5 mm: is the unit m rather than mm?")


def test_too_flat_to_carry_defects(tmp_path: Path) -> None:
    path = tmp_path / "shim.stl"
    trimesh.creation.box((40.0, 30.0, 1.0)).export(path)
    assert "only 1 mm tall (z)" in _spec_error(path)


def test_open_mesh_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cup.stl"
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    sphere.update_faces(sphere.triangles_center[:, 2] < 15.0)  # the cap cut off: a big hole
    sphere.remove_unreferenced_vertices()
    sphere.export(path)
    msg = _spec_error(path)
    assert "not closed after repair:" in msg and "open edges in 1 boundary loop;" in msg
    assert "need a closed solid" in msg


def test_too_many_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cad, "MAX_FACES", 1000)  # the real limit (500,000) is slow to write
    path = tmp_path / "scan_mesh.stl"
    trimesh.creation.icosphere(subdivisions=4, radius=20.0).export(path)  # 5,120 faces
    msg = _spec_error(path)
    assert "5,120 triangles, more than 1,000: decimate the mesh" in msg


def test_long_paths_are_cut(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "nothere.stl"
    with pytest.raises(SpecError) as err:
        cad_family(path, "mm", where=WHERE)
    msg = str(err.value)
    assert "..." in msg and msg.endswith("nothere.stl: no such file") and len(msg) < 140
