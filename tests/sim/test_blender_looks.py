"""Tests of the Blender looks (``sim.render.blender.looks``): every finish and world builds,
a seed fixes a material and an environment exactly and different seeds differ, and Cycles
renders them to finite, lit pixels.

bpy never loads into the test process: one subprocess runs every check in Blender and
prints a JSON report that the tests below read. Skipped when bpy is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.render import ENVIRONMENTS, FINISHES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("bpy") is None,
        reason="bpy (Blender as a Python module) is not installed: pip install 'bpy==5.0.*'",
    ),
]

REPO = Path(__file__).resolve().parents[2]

# Runs inside Blender (bpy); prints one line "REPORT <json>".
SCRIPT = r"""
import json
import tempfile

import bpy
import numpy as np

from sim.render import ENVIRONMENTS, FINISHES, Environment, Material
from sim.render.blender import looks

PROPS = (
    "operation", "data_type", "blend_type", "interpolation_type", "noise_dimensions",
    "feature", "distance", "samples", "vector_type", "convert_from", "convert_to",
    "subsurface_method", "use_clamp", "clamp", "normalize",
)


def value(s):
    if s.is_linked or not hasattr(s, "default_value"):
        return None
    v = s.default_value
    if isinstance(v, (bool, int, float)):
        return round(float(v), 9)
    try:
        return [round(float(x), 9) for x in v]
    except TypeError:
        return str(v)


def digest(tree):
    nodes = []
    for n in tree.nodes:
        props = sorted((k, str(getattr(n, k))) for k in PROPS if hasattr(n, k))
        nodes.append((n.bl_idname, n.name, props, [(s.identifier, value(s)) for s in n.inputs]))
    links = sorted(
        (l.from_node.name, l.from_socket.identifier, l.to_node.name, l.to_socket.identifier)
        for l in tree.links
    )
    return json.dumps([nodes, links])


def surface_shader(mat):
    out = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    links = out.inputs["Surface"].links
    return links[0].from_node.bl_idname if links else None


PARAMS = {
    "turned": (("anisotropy", 0.7), ("ring_pitch_mm", 0.25), ("wear", 0.4)),
    "scratch": (("dir_x", 0.6), ("dir_y", 0.8), ("dir_z", 0.0)),
    "painted": (("wear", 0.5),),
}


def mat(finish, seed, params=None, name="m"):
    p = PARAMS.get(finish, ()) if params is None else params
    return looks.material(Material((0.8, 0.8, 0.82), 1.0, 0.3, finish, seed, p), name)


bpy.ops.wm.read_factory_settings(use_empty=True)  # no default cube around the camera
report = {"finishes": {}, "worlds": {}}
for f in FINISHES:
    a, b, c = mat(f, 7, name=f + "_a"), mat(f, 7, name=f + "_b"), mat(f, 8, name=f + "_c")
    report["finishes"][f] = {
        "shader": surface_shader(a),
        "nodes": len(a.node_tree.nodes),
        "same_seed_equal": digest(a.node_tree) == digest(b.node_tree),
        "other_seed_differs": digest(a.node_tree) != digest(c.node_tree),
    }
t1 = mat("turned", 7, (("ring_pitch_mm", 0.25),))
t2 = mat("turned", 7, (("ring_pitch_mm", 0.4),))
s1 = mat("scratch", 7, (("dir_x", 1.0), ("dir_y", 0.0), ("dir_z", 0.0)))
s2 = mat("scratch", 7, (("dir_x", 0.0), ("dir_y", 1.0), ("dir_z", 0.0)))
report["params_matter"] = {
    "turned": digest(t1.node_tree) != digest(t2.node_tree),
    "scratch": digest(s1.node_tree) != digest(s2.node_tree),
}
u = looks.material(Material((0.5, 0.5, 0.5), finish="no-such-finish"), "unknown")
report["unknown"] = {"shader": surface_shader(u), "nodes": len(u.node_tree.nodes)}

for kind in ENVIRONMENTS:
    env = Environment(kind, strength=1.5, rotation_deg=30.0, seed=3)
    looks.world(env, (0.1, 0.2, 0.3), (0.25, 0.25, 0.25))
    w = bpy.context.scene.world
    first = digest(w.node_tree)
    looks.world(env, (0.1, 0.2, 0.3), (0.25, 0.25, 0.25))
    entry = {"kept": digest(w.node_tree) == first}
    bg = next(n for n in w.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    entry["strength"] = bg.inputs["Strength"].default_value
    mapping = [n for n in w.node_tree.nodes if n.bl_idname == "ShaderNodeMapping"]
    entry["rotation_z"] = mapping[0].inputs["Rotation"].default_value[2] if mapping else None
    if kind != "none":
        a = looks._environment_image(kind, 3)
        b = looks._environment_image(kind, 3)
        c = looks._environment_image(kind, 4)
        entry.update(
            shape=list(a.shape),
            finite=bool(np.isfinite(a).all()),
            min=float(a.min()),
            max=float(a.max()),
            median=float(np.median(a)),
            same_seed_equal=bool(np.array_equal(a, b)),
            other_seed_differs=not np.array_equal(a, c),
        )
    report["worlds"][kind] = entry

# One tiny Cycles render per world: a disc-topped cylinder whose faces cycle through every
# finish, standing on a plane.
sc = bpy.context.scene
sc.render.engine = "CYCLES"
sc.cycles.device = "CPU"
sc.cycles.samples = 4
sc.cycles.use_denoising = False
sc.render.threads_mode = "FIXED"
sc.render.threads = 1
sc.render.resolution_x = sc.render.resolution_y = 48
sc.render.image_settings.file_format = "PNG"
bpy.ops.mesh.primitive_cylinder_add(vertices=48, radius=0.03, depth=0.02, location=(0, 0, 0.01))
part = bpy.context.object
for i, f in enumerate(FINISHES):
    part.data.materials.append(mat(f, i, name="r_" + f))
for poly in part.data.polygons:
    poly.material_index = poly.index % len(FINISHES)
bpy.ops.mesh.primitive_plane_add(size=0.3)
bpy.context.object.data.materials.append(mat("wood", 1, name="r_bench"))
cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
cam.location = (0.0, -0.12, 0.12)
cam.rotation_euler = (0.785, 0.0, 0.0)
sc.collection.objects.link(cam)
sc.camera = cam
report["renders"] = {}
with tempfile.TemporaryDirectory() as tmp:
    for kind in ENVIRONMENTS:
        looks.world(Environment(kind, seed=1), (0.0, 0.0, 0.0), (0.3, 0.3, 0.3))
        sc.render.filepath = f"{tmp}/{kind}.png"
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(sc.render.filepath)
        px = np.array(img.pixels[:], dtype=np.float32).reshape(48, 48, 4)[..., :3]
        magenta = (px[..., 0] > 0.9) & (px[..., 1] < 0.1) & (px[..., 2] > 0.9)
        report["renders"][kind] = {
            "finite": bool(np.isfinite(px).all()),
            "mean": float(px.mean()),
            "std": float(px.std()),
            "magenta": int(magenta.sum()),
        }
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """The JSON report of ``SCRIPT`` run in a Blender subprocess."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"Blender looks script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1][len("REPORT ") :])
    return out


def test_every_finish_builds_a_principled_material(report: dict[str, Any]) -> None:
    assert set(report["finishes"]) == set(FINISHES)
    for finish, r in report["finishes"].items():
        assert r["shader"] == "ShaderNodeBsdfPrincipled", finish
    # Every finish but the CAD look adds procedural detail.
    for finish, r in report["finishes"].items():
        if finish != "plain":
            assert r["nodes"] > report["finishes"]["plain"]["nodes"], finish


def test_same_seed_same_material_other_seed_differs(report: dict[str, Any]) -> None:
    for finish, r in report["finishes"].items():
        assert r["same_seed_equal"], finish
        if finish != "plain":
            assert r["other_seed_differs"], finish


def test_finish_params_change_the_material(report: dict[str, Any]) -> None:
    assert report["params_matter"] == {"turned": True, "scratch": True}


def test_unknown_finish_is_drawn_plain(report: dict[str, Any]) -> None:
    assert report["unknown"]["shader"] == "ShaderNodeBsdfPrincipled"
    assert report["unknown"]["nodes"] == report["finishes"]["plain"]["nodes"]


def test_every_world_builds_and_is_kept_when_unchanged(report: dict[str, Any]) -> None:
    assert set(report["worlds"]) == set(ENVIRONMENTS)
    for kind, r in report["worlds"].items():
        assert r["kept"], kind
    assert report["worlds"]["none"]["strength"] == pytest.approx(1.0)
    for kind in ("studio", "workshop"):
        r = report["worlds"][kind]
        assert r["strength"] == pytest.approx(1.5), kind
        assert r["rotation_z"] == pytest.approx(-0.5236, abs=1e-4), kind


def test_environment_maps_are_seeded_and_photographic(report: dict[str, Any]) -> None:
    for kind in ("studio", "workshop"):
        r = report["worlds"][kind]
        h, w, c = r["shape"]
        assert (w, c) == (2 * h, 3), kind
        assert r["finite"] and r["min"] >= 0.0, kind
        assert r["same_seed_equal"] and r["other_seed_differs"], kind
        # Bright sources (soft boxes, windows, lamps) over a dim surround.
        assert r["max"] > 1.5, kind
        assert r["median"] < 0.3, kind


def test_cycles_renders_every_finish_in_every_world(report: dict[str, Any]) -> None:
    for kind, r in report["renders"].items():
        assert r["finite"], kind
        assert r["magenta"] == 0, kind  # Cycles' colour for a broken shader or texture
        assert 0.02 < r["mean"] < 0.95, kind
        assert r["std"] > 0.01, kind
