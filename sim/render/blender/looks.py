"""Blender materials and world from the backend-neutral description (runs inside the worker).

Imports bpy: only the Blender worker process imports this module.

``material`` turns a ``Material`` into a procedural Cycles node tree per finish (turning
rings, face-milling arcs, cast grain and pits, polymers, texture defects - scratch grooves,
stains, corrosion, flow marks, dust - bench tops and clutter), every random detail drawn
from ``Material.seed``; ``world`` builds a procedural studio or workshop environment
(computed in numpy, handed to Cycles as an in-memory image; no files). Texture coordinates
are the object's own frame in metres (a part's axis is object z, its bottom at z = 0), so
objects must be posed by their matrix, not by baking the pose into the vertices, and must
not be scaled.

Speed (Cycles CPU renders every node at every shading point of every bounce): no Voronoi
stacks or high-detail noise; grooved finishes (turned, milled, scratch, brushed steel) tilt
the normal across their grooves with a few vector maths instead of a Bump node, which
evaluates its height graph three times; the only ray-traced node is one 2-sample Bevel for
edge wear (turned, milled, painted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import bpy
import numpy as np

from sim.render import FINISHES, Environment, Material

log = logging.getLogger(__name__)

#: A node socket or a constant for a node input (bpy types are untyped here).
Value = Any
Socket = Any

MM = 1e-3


class _Graph:
    """A thin builder over a bpy node tree: new nodes, links and maths in one call each."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree
        self._coords: Socket | None = None
        self._geometry: Any = None

    def new(self, kind: str, inputs: dict[str | int, Value] | None = None, **props: Any) -> Any:
        """A new node of type ``kind`` with properties ``props`` and input values/links."""
        node = self.tree.nodes.new(kind)
        for key, val in props.items():
            setattr(node, key, val)
        for k, v in (inputs or {}).items():
            self.set(node.inputs[k], v)
        return node

    def set(self, sock: Any, v: Value) -> None:
        """Link ``v`` into ``sock`` if it is a socket, else set its default value."""
        if isinstance(v, bpy.types.NodeSocket):
            self.tree.links.new(v, sock)
        elif isinstance(v, np.ndarray | tuple | list):
            vals = [float(x) for x in v]
            if sock.type == "RGBA" and len(vals) == 3:
                vals.append(1.0)
            sock.default_value = vals
        else:
            sock.default_value = float(v) if isinstance(v, int | float | np.floating) else v

    def math(
        self, op: str, a: Value, b: Value = 0.0, c: Value = 0.0, clamp: bool = False
    ) -> Socket:
        """A scalar Math node's output."""
        n = self.new("ShaderNodeMath", operation=op, use_clamp=clamp)
        self.set(n.inputs[0], a)
        self.set(n.inputs[1], b)
        self.set(n.inputs[2], c)
        return n.outputs[0]

    def vmath(self, op: str, a: Value, b: Value = (0.0, 0.0, 0.0), scale: Value = 1.0) -> Socket:
        """A Vector Math node's output (its Value output for dot product and length)."""
        n = self.new("ShaderNodeVectorMath", operation=op)
        self.set(n.inputs[0], a)
        self.set(n.inputs[1], b)
        self.set(n.inputs[3], scale)
        return n.outputs["Value" if op in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else "Vector"]

    def mix(
        self,
        fac: Value,
        a: Value,
        b: Value,
        kind: str = "RGBA",
        blend: str = "MIX",
        clamp: bool = False,
    ) -> Socket:
        """A Mix node's result: ``kind`` "FLOAT", "VECTOR" or "RGBA"; ``clamp`` clips a
        colour result to [0, 1]."""
        n = self.new(
            "ShaderNodeMix", data_type=kind, blend_type=blend, clamp_factor=True, clamp_result=clamp
        )
        suffix = {"FLOAT": "Float", "VECTOR": "Vector", "RGBA": "Color"}[kind]
        ins = {s.identifier: s for s in n.inputs}
        self.set(ins["Factor_Float"], fac)
        self.set(ins[f"A_{suffix}"], a)
        self.set(ins[f"B_{suffix}"], b)
        return next(s for s in n.outputs if s.identifier == f"Result_{suffix}")

    def remap(
        self, v: Value, lo: float, hi: float, to_lo: Value, to_hi: Value, smooth: bool = False
    ) -> Socket:
        """``v`` mapped linearly (or smoothstep) from [lo, hi] to [to_lo, to_hi], clamped."""
        n = self.new(
            "ShaderNodeMapRange",
            {1: lo, 2: hi, 3: to_lo, 4: to_hi},
            interpolation_type="SMOOTHSTEP" if smooth else "LINEAR",
            clamp=True,
        )
        self.set(n.inputs[0], v)
        return n.outputs["Result"]

    def xyz(self, v: Value) -> tuple[Socket, Socket, Socket]:
        """The x, y, z components of a vector."""
        n = self.new("ShaderNodeSeparateXYZ")
        self.set(n.inputs[0], v)
        return n.outputs[0], n.outputs[1], n.outputs[2]

    def vec(self, x: Value, y: Value, z: Value) -> Socket:
        """A vector from three scalars."""
        n = self.new("ShaderNodeCombineXYZ")
        for i, c in enumerate((x, y, z)):
            self.set(n.inputs[i], c)
        return n.outputs[0]

    def noise(
        self,
        vector: Value,
        scale: float,
        detail: float = 2.0,
        roughness: float = 0.5,
        dims: str = "3D",
        distortion: float = 0.0,
    ) -> Socket:
        """Perlin fBm in [0, 1] (about 0.5 mean); with ``dims`` "1D" ``vector`` is the W input."""
        n = self.new(
            "ShaderNodeTexNoise",
            {"Scale": scale, "Detail": detail, "Roughness": roughness, "Distortion": distortion},
            noise_dimensions=dims,
            normalize=True,
        )
        self.set(n.inputs["W" if dims == "1D" else "Vector"], vector)
        return n.outputs["Factor"]

    def coords(self) -> Socket:
        """Object-frame texture coordinates (metres)."""
        if self._coords is None:
            self._coords = self.new("ShaderNodeTexCoord").outputs["Object"]
        return self._coords

    def geometry(self) -> Any:
        """The (shared) Geometry node."""
        if self._geometry is None:
            self._geometry = self.new("ShaderNodeNewGeometry")
        return self._geometry

    def across(self, grad_obj: Value, normal: Socket) -> Socket:
        """The unit world-space direction in the surface (perpendicular to ``normal``) along
        which an object-frame field with gradient ``grad_obj`` changes: across its grooves.

        This is the BSDF tangent of a grooved finish: Cycles stretches a highlight along the
        tangent, and grooves stretch it across themselves (the radial streak on a turned
        face), so the tangent points across the grooves.
        """
        vt = self.new(
            "ShaderNodeVectorTransform",
            vector_type="VECTOR",
            convert_from="OBJECT",
            convert_to="WORLD",
        )
        self.set(vt.inputs[0], grad_obj)
        gw = vt.outputs[0]
        along_n = self.vmath("SCALE", normal, scale=self.vmath("DOT_PRODUCT", gw, normal))
        return self.vmath("NORMALIZE", self.vmath("SUBTRACT", gw, along_n))

    def tilt(self, normal: Socket, direction: Socket, slope: Value) -> Socket:
        """``normal`` tilted by ``slope`` (radians, small) towards the in-surface unit
        ``direction``: relief of grooves whose profile slope is known, at the cost of a few
        vector maths, where a Bump node would evaluate its height graph three times."""
        return self.vmath(
            "NORMALIZE", self.vmath("ADD", normal, self.vmath("SCALE", direction, scale=slope))
        )

    def bump(self, height: Value, strength: float, distance: float, normal: Value = None) -> Socket:
        """A Bump node's perturbed normal from ``height`` (``distance`` in metres)."""
        n = self.new("ShaderNodeBump", {"Strength": strength, "Distance": distance})
        self.set(n.inputs["Height"], height)
        if normal is not None:
            self.set(n.inputs["Normal"], normal)
        return n.outputs["Normal"]

    def edges(self, radius_m: float) -> tuple[Socket, Socket]:
        """(edge mask in [0, 1] on convex and concave edges, rounded-edge normal).

        One Bevel node with 2 samples: the only ray-traced node these looks use (4+ samples
        cost about 10 % more per frame for no visible gain at inspection resolutions).
        """
        bevel = self.new("ShaderNodeBevel", {"Radius": radius_m}, samples=2)
        d = self.vmath("DOT_PRODUCT", bevel.outputs["Normal"], self.geometry().outputs["Normal"])
        return self.remap(d, 0.995, 0.85, 0.0, 1.0), bevel.outputs["Normal"]


def _rng(m: Material) -> np.random.Generator:
    """The material's generator: seeded by ``m.seed`` and salted by its finish."""
    salt = FINISHES.index(m.finish) if m.finish in FINISHES else len(FINISHES)
    return np.random.default_rng([int(m.seed) % (2**32), salt])


def _offset(g: _Graph, rng: np.random.Generator, span_m: float = 10.0) -> Socket:
    """Object coordinates shifted by a seeded offset (each noise pattern lands elsewhere)."""
    return g.vmath("ADD", g.coords(), rng.uniform(-span_m, span_m, 3))


def _clamp01(v: float) -> float:
    """``v`` clipped to [0, 1] as a float."""
    return float(np.clip(v, 0.0, 1.0))


def _scale_color(g: _Graph, color: Value, k: Value) -> Socket:
    """``color`` (constant or socket) times a scalar ``k`` (constant or socket), clipped to
    [0, 1] (an albedo or metal F0 above 1 would add energy)."""
    return g.mix(1.0, color, g.vec(k, k, k), blend="MULTIPLY", clamp=True)


# --- finishes -------------------------------------------------------------------------------
# Each builder wires the Principled BSDF ``p`` of graph ``g`` for material ``m``; the BSDF
# already carries the nominal base colour, metallic and roughness.

Builder = Callable[[_Graph, Any, Material, np.random.Generator], None]


def _plain(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Uniform PBR: the CAD look (nothing to add)."""


def _turned(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Lathe-turned metal: concentric rings about object z, anisotropic along them."""
    pitch_m = max(m.param("ring_pitch_mm", 0.25), 0.02) * MM * rng.uniform(0.9, 1.1)
    aniso = _clamp01(m.param("anisotropy", 0.7))
    wear = _clamp01(m.param("wear", 0.3))
    rough0 = float(m.roughness)
    P = g.coords()
    x, y, z = g.xyz(P)
    radial = g.vec(x, y, 0.0)
    r = g.vmath("LENGTH", radial)
    # The tool-path coordinate: every function of (r, z) has circles about z as level sets,
    # so s = r + z gives rings on faces (z const), bands on cylinders (r const), both on
    # chamfers, i.e. turning marks wherever the lathe tool went. Its gradient, (x/r, y/r, 1),
    # projected into the surface points across the marks.
    s = g.math("ADD", r, z)
    grad = g.vmath("ADD", g.vmath("NORMALIZE", radial), (0.0, 0.0, 1.0))
    # Fine rings: the scallops a round tool nose leaves, one per feed (sub-pixel at
    # inspection scale: they show as grain in the highlights and in close-ups).
    wave = g.math("SINE", g.math("MULTIPLY_ADD", s, math.pi / pitch_m, rng.uniform(0.0, math.pi)))
    ring = g.math("ABSOLUTE", wave)
    # Pass bands: the feed, tool wear and chatter change along the path in mm-wide bands;
    # they are what makes a turned face read as turned at low resolution.
    band_mm = rng.uniform(0.8, 1.6)
    band = g.noise(
        g.math("MULTIPLY_ADD", s, 1.0 / (band_mm * MM), rng.uniform(0, 100)),
        1.0,
        detail=1.0,
        roughness=0.5,
        dims="1D",
    )
    band = g.remap(band, 0.25, 0.75, -1.0, 1.0)
    # Low-frequency blotches (coolant stains, handling): a 15-25 mm noise.
    blot = g.noise(_offset(g, rng), 1.0 / (rng.uniform(15, 25) * MM), detail=0.0)
    edge, edge_n = g.edges(0.4 * MM)
    # Roughness: nominal, banded, blotched, grained by the rings; smoother on worn edges.
    rough = g.math("MULTIPLY_ADD", band, 0.2 * rough0, rough0)
    rough = g.math("MULTIPLY", rough, g.remap(blot, 0.3, 0.7, 0.8, 1.2))
    rough = g.math("MULTIPLY_ADD", ring, 0.08, rough)
    rough = g.math("MULTIPLY", rough, g.math("MULTIPLY_ADD", edge, -0.6 * wear, 1.0), clamp=True)
    g.set(p.inputs["Roughness"], rough)
    # Colour: banded by a few per cent; edges deburred to bright metal.
    k = g.math("MULTIPLY_ADD", band, 0.04, 1.0)
    k = g.math("MULTIPLY_ADD", edge, 0.25 * wear, k)
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    g.set(p.inputs["Anisotropic"], g.math("MULTIPLY", aniso, g.math("MULTIPLY_ADD", edge, -0.7, 1)))
    across = g.across(grad, edge_n)
    g.set(p.inputs["Tangent"], across)
    # Relief: the bands and rings tilt the normal across the marks. Mostly the bands: the
    # sub-pixel rings alias into moire swirls when they bend the normal strongly.
    slope = g.math("MULTIPLY_ADD", band, 0.03, g.math("MULTIPLY", wave, 0.01))
    g.set(p.inputs["Normal"], g.tilt(edge_n, across, slope))


def _milled(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Face-milled metal: arcs of a fly cutter swept along a feed direction, in passes."""
    rough0 = float(m.roughness)
    radius = rng.uniform(20, 35) * MM * m.param("cutter_radius_scale", 1.0)
    feed = max(m.param("feed_mm", 0.3), 0.02) * MM
    ang = rng.uniform(0, 2 * math.pi)
    du = (math.cos(ang), math.sin(ang), 0.0)
    dv = (-math.sin(ang), math.cos(ang), 0.0)
    P = _offset(g, rng, 0.05)
    u = g.vmath("DOT_PRODUCT", P, du)
    v = g.vmath("DOT_PRODUCT", P, dv)
    # Faces (object normal near +-z) carry the fly-cutter arcs; walls the end mill's flank
    # marks, lines at constant z. flat is 1 on faces, 0 on walls.
    nrm = g.new(
        "ShaderNodeVectorTransform", vector_type="NORMAL", convert_from="WORLD", convert_to="OBJECT"
    )
    g.set(nrm.inputs[0], g.geometry().outputs["Normal"])
    flat = g.remap(g.math("ABSOLUTE", g.xyz(nrm.outputs[0])[2]), 0.5, 0.8, 0.0, 1.0)
    zc = g.xyz(P)[2]
    # Passes of width 1.6 R side by side; v_loc is the offset from the pass centre line.
    width = 1.6 * radius
    v_loc = g.math("WRAP", v, -0.5 * width, 0.5 * width)
    pass_id = g.math("FLOOR", g.math("DIVIDE", v, width))
    pass_rand = g.new("ShaderNodeTexWhiteNoise", noise_dimensions="1D")
    g.set(pass_rand.inputs["W"], g.math("ADD", pass_id, rng.uniform(0, 100)))
    pr = pass_rand.outputs["Value"]
    # A point lies on the arc of the cut centred at u - sqrt(R^2 - v^2): rings in that.
    h = g.math("SQRT", g.math("SUBTRACT", radius * radius, g.math("MULTIPLY", v_loc, v_loc)))
    q = g.mix(flat, zc, g.math("SUBTRACT", u, h), kind="FLOAT")
    wave = g.math("SINE", g.math("MULTIPLY_ADD", q, math.pi / feed, rng.uniform(0, 3)))
    ring = g.math("ABSOLUTE", wave)
    band = g.noise(
        g.math("MULTIPLY_ADD", q, 1.0 / (rng.uniform(1.0, 2.0) * MM), pr),
        1.0,
        detail=2.0,
        dims="1D",
    )
    band = g.remap(band, 0.3, 0.7, -1.0, 1.0)
    edge, edge_n = g.edges(0.3 * MM)
    rough = g.math("MULTIPLY_ADD", band, 0.25 * rough0, rough0 * rng.uniform(0.9, 1.1))
    rough = g.math("MULTIPLY", rough, g.math("MULTIPLY_ADD", pr, 0.3, 0.85))
    rough = g.math("MULTIPLY_ADD", ring, 0.06, rough, clamp=True)
    g.set(p.inputs["Roughness"], rough)
    k = g.math("MULTIPLY_ADD", band, 0.03, g.math("MULTIPLY_ADD", pr, 0.06, 0.97))
    k = g.math("MULTIPLY_ADD", edge, 0.15 * _clamp01(m.param("wear", 0.3)), k)
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    g.set(p.inputs["Anisotropic"], _clamp01(m.param("anisotropy", 0.6)))
    # Grooves run along the arc; the tangent (see _Graph.across) is across them: radial.
    radial = g.vmath("ADD", g.vmath("SCALE", du, scale=h), g.vmath("SCALE", dv, scale=v_loc))
    radial = g.mix(flat, (0.0, 0.0, 1.0), g.vmath("NORMALIZE", radial), kind="VECTOR")
    across = g.across(radial, edge_n)
    g.set(p.inputs["Tangent"], across)
    slope = g.math("MULTIPLY_ADD", band, 0.03, g.math("MULTIPLY", wave, 0.01))
    g.set(p.inputs["Normal"], g.tilt(edge_n, across, slope))


def _cast(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Cast metal: matte, grainy, small pits, slightly darker uneven colour."""
    rough0 = max(float(m.roughness), 0.55)
    grain = g.noise(_offset(g, rng), 1.0 / (rng.uniform(0.25, 0.4) * MM), detail=1.0)
    blot = g.noise(_offset(g, rng), 1.0 / (rng.uniform(8, 14) * MM), detail=2.0)
    vor = g.new(
        "ShaderNodeTexVoronoi",
        {"Scale": 1.0 / (rng.uniform(1.5, 2.5) * MM), "Randomness": 1.0},
        feature="F1",
        distance="EUCLIDEAN",
    )
    g.set(vor.inputs["Vector"], _offset(g, rng))
    pit = g.remap(vor.outputs["Distance"], 0.12 * m.param("pits", 1.0), 0.04, 0.0, 1.0, smooth=True)
    rough = g.math("MULTIPLY", rough0, g.remap(grain, 0.3, 0.7, 0.85, 1.15))
    rough = g.math("MULTIPLY_ADD", pit, 0.15, rough, clamp=True)
    g.set(p.inputs["Roughness"], rough)
    k = g.math(
        "MULTIPLY", g.remap(blot, 0.3, 0.7, 0.72, 0.95), g.math("MULTIPLY_ADD", pit, -0.4, 1)
    )
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    # Relief from the grain only (a Bump node evaluates its height graph three times; the
    # sub-pixel pits read through their colour and roughness).
    g.set(p.inputs["Normal"], g.bump(grain, 0.2, 0.01 * MM))


def _polymer(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Opaque moulded plastic: dielectric, soft sheen, light subsurface, faint mould grain."""
    g.set(p.inputs["Metallic"], 0.0)
    p.subsurface_method = "BURLEY"
    g.set(p.inputs["Subsurface Weight"], _clamp01(m.param("subsurface", 0.15)))
    g.set(p.inputs["Subsurface Radius"], (1.0, 0.7, 0.5))
    g.set(p.inputs["Subsurface Scale"], 1.5 * MM)
    g.set(p.inputs["Sheen Weight"], 0.25)
    g.set(p.inputs["Sheen Roughness"], 0.4)
    g.set(p.inputs["Specular IOR Level"], 0.45)
    g.set(p.inputs["IOR"], 1.49)
    rough0 = float(m.roughness)
    grain = g.noise(_offset(g, rng), 1.0 / (rng.uniform(0.15, 0.3) * MM), detail=0.0)
    blot = g.noise(_offset(g, rng), 1.0 / (rng.uniform(10, 20) * MM), detail=0.0)
    g.set(p.inputs["Roughness"], g.math("MULTIPLY", rough0, g.remap(blot, 0.3, 0.7, 0.85, 1.15)))
    g.set(p.inputs["Normal"], g.bump(grain, 0.08, 0.01 * MM))


def _translucent(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Translucent polymer (natural PP/PE, frosted PC): milky, light scattering deep inside
    with some rough transmission, so thin walls and edges glow."""
    g.set(p.inputs["Metallic"], 0.0)
    p.subsurface_method = "BURLEY"
    g.set(p.inputs["Transmission Weight"], _clamp01(m.param("transmission", 0.35)))
    g.set(p.inputs["Subsurface Weight"], _clamp01(m.param("subsurface", 1.0)))
    g.set(p.inputs["Subsurface Radius"], (1.0, 0.85, 0.7))
    g.set(p.inputs["Subsurface Scale"], m.param("scatter_mm", 4.0) * MM)
    g.set(p.inputs["IOR"], 1.49)
    rough0 = max(float(m.roughness), 0.15)
    blot = g.noise(_offset(g, rng), 1.0 / (rng.uniform(8, 15) * MM), detail=1.0)
    g.set(p.inputs["Roughness"], g.math("MULTIPLY", rough0, g.remap(blot, 0.3, 0.7, 0.8, 1.2)))


def _scratch(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """A scratch: fine grooves along its direction, rougher and brighter than the surround."""
    d = np.array([m.param("dir_x", 1.0), m.param("dir_y", 0.0), m.param("dir_z", 0.0)])
    norm = float(np.linalg.norm(d))
    d = d / norm if norm > 1e-9 else np.array([1.0, 0.0, 0.0])
    # Across-the-scratch direction in the (mostly upward) face: perpendicular to d and z.
    up = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e = np.cross(up, d)
    e /= np.linalg.norm(e)
    P = g.coords()
    w = g.vmath("DOT_PRODUCT", P, e)
    along = g.vmath("DOT_PRODUCT", P, d)
    # Fine parallel lines (the abrasive's grit): a 40-80 um sine plus random grooves of a
    # 1D noise across the width that wander slowly along the scratch.
    wobble = g.noise(
        g.math("MULTIPLY_ADD", along, 1.0 / (3 * MM), rng.uniform(0, 100)),
        1.0,
        detail=1.0,
        dims="1D",
    )
    w2 = g.math("MULTIPLY_ADD", wobble, 0.05 * MM, w)
    wave = g.math(
        "SINE",
        g.math("MULTIPLY_ADD", w2, math.pi / (rng.uniform(40, 80) * 1e-6), rng.uniform(0, 3)),
    )
    lines = g.math("ABSOLUTE", wave)
    grooves = g.noise(
        g.math("MULTIPLY_ADD", w2, 1.0 / (0.2 * MM), rng.uniform(0, 100)),
        1.0,
        detail=3.0,
        roughness=0.7,
        dims="1D",
    )
    grooves = g.remap(grooves, 0.25, 0.75, 0.0, 1.0)
    rough0 = float(m.roughness)
    rough = g.math("MULTIPLY_ADD", grooves, 0.2, max(rough0 * 1.3 + 0.15, 0.45))
    rough = g.math("MULTIPLY_ADD", lines, 0.08, rough, clamp=True)
    g.set(p.inputs["Roughness"], rough)
    k = g.math("MULTIPLY_ADD", grooves, 0.35, 0.95 + 0.3 * float(m.metallic))
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    g.set(p.inputs["Anisotropic"], _clamp01(m.param("anisotropy", 0.9)))
    # The grooves run along d; the tangent goes across them (see _Graph.across), and their
    # walls tilt the normal across the scratch by up to ~10 degrees.
    normal = g.geometry().outputs["Normal"]
    across = g.across(tuple(float(c) for c in e), normal)
    g.set(p.inputs["Tangent"], across)
    slope = g.math(
        "MULTIPLY_ADD", g.math("SUBTRACT", grooves, 0.5), 0.3, g.math("MULTIPLY", wave, 0.08)
    )
    g.set(p.inputs["Normal"], g.tilt(normal, across, slope))


# Texture defects on a surface (``sim.appearance.defect_material``): the material's base
# colour, metallic and roughness are the defect at full strength; ``surf_*`` params are the
# surface it lies on (its finish drawn underneath, so turning marks run on under a stain),
# ``cx``/``cy``/``cz`` (m, object frame) and ``radius_mm`` the patch's centre and radius.

#: Finishes of texture defects on a surface: never drawn as the surface under another.
_DEFECT_FINISHES = ("scratch", "stain", "corrosion", "flow_marks", "dust")


def _surface_of(m: Material) -> Material:
    """The material of the surface a texture defect lies on (``surf_*`` params; the
    defect's own values where they are missing)."""
    color = (
        m.param("surf_r", m.base_color[0]),
        m.param("surf_g", m.base_color[1]),
        m.param("surf_b", m.base_color[2]),
    )
    idx = int(m.param("surf_finish", 0.0))
    finish = FINISHES[idx] if 0 <= idx < len(FINISHES) else "plain"
    if finish in _DEFECT_FINISHES:
        finish = "plain"
    params = tuple(sorted((k[7:], v) for k, v in m.params if k.startswith("surf_p_")))
    return Material(
        color,
        m.param("surf_metallic", m.metallic),
        m.param("surf_roughness", m.roughness),
        finish,
        int(m.param("surf_seed", m.seed)),
        params,
    )


def _under(g: _Graph, p: Any, m: Material) -> dict[str, Value]:
    """Draw the surface under a texture defect on ``p`` (its finish, seeded as on the part
    itself) and return what now feeds the BSDF: "Base Color", "Metallic", "Roughness",
    "Anisotropic" and "Normal" (a socket or a constant; Normal always a socket)."""
    s = _surface_of(m)
    g.set(p.inputs["Base Color"], (*s.base_color, 1.0))
    g.set(p.inputs["Metallic"], float(s.metallic))
    g.set(p.inputs["Roughness"], float(s.roughness))
    _BUILDERS.get(s.finish, _plain)(g, p, s, _rng(s))
    out: dict[str, Value] = {}
    for name in ("Base Color", "Metallic", "Roughness", "Anisotropic", "Normal"):
        sock = p.inputs[name]
        if sock.is_linked:
            out[name] = sock.links[0].from_socket
        elif name == "Base Color":
            out[name] = tuple(float(v) for v in sock.default_value)[:3]
        elif name == "Normal":
            out[name] = g.geometry().outputs["Normal"]
        else:
            out[name] = float(sock.default_value)
    return out


def _patch_radius(g: _Graph, m: Material) -> Socket:
    """Distance from the patch centre over its radius: 0 at the centre, ~1 at the outline."""
    c = (m.param("cx", 0.0), m.param("cy", 0.0), m.param("cz", 0.0))
    radius = max(m.param("radius_mm", 5.0), 0.3) * MM
    return g.math("DIVIDE", g.vmath("DISTANCE", g.coords(), c), radius)


def _stain(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """A stain: the surface (its finish drawn underneath) tinted towards the stain colour,
    full in the middle, fading with a noisy edge and a darker tide line where the liquid
    dried last; mottled."""
    u = _under(g, p, m)
    radius = max(m.param("radius_mm", 5.0), 0.3) * MM
    r = _patch_radius(g, m)
    warp = g.noise(_offset(g, rng, 1.0), 1.0 / (0.4 * radius), detail=3.0, roughness=0.6)
    rr = g.math("MULTIPLY_ADD", warp, 0.6, g.math("SUBTRACT", r, 0.3))
    body = g.remap(rr, 0.35, 0.95, 1.0, 0.45, smooth=True)
    tide = g.remap(
        g.math("ABSOLUTE", g.math("SUBTRACT", rr, rng.uniform(0.72, 0.82))), 0.0, 0.07, 1.0, 0.0
    )
    mottle = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.4, 0.8) * MM), detail=2.0)
    f = g.math("MULTIPLY", body, g.remap(mottle, 0.3, 0.7, 0.75, 1.1))
    f = g.math("MULTIPLY_ADD", tide, 0.4, f, clamp=True)
    color = g.mix(f, u["Base Color"], m.base_color)
    g.set(p.inputs["Base Color"], _scale_color(g, color, g.math("MULTIPLY_ADD", tide, -0.25, 1.0)))
    g.set(p.inputs["Metallic"], g.mix(f, u["Metallic"], float(m.metallic), kind="FLOAT"))
    rough = g.math("ADD", u["Roughness"], float(m.roughness) - _surface_of(m).roughness)
    g.set(p.inputs["Roughness"], g.mix(f, u["Roughness"], rough, kind="FLOAT", clamp=True))


def _corrosion(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """A corrosion spot: crusty rust (dark brown to orange) or powdery white rust over the
    surface's own finish, thinning to islands of bare metal at its ragged edge; rough, with
    a bumpy crust."""
    u = _under(g, p, m)
    radius = max(m.param("radius_mm", 5.0), 0.3) * MM
    rust = m.param("rust", 1.0) > 0.5
    r = _patch_radius(g, m)
    cover = g.noise(_offset(g, rng, 1.0), 1.0 / (0.3 * radius), detail=3.0, roughness=0.65)
    # Coverage: full inside, broken up by noise towards the outline.
    f = g.math("MULTIPLY_ADD", g.math("SUBTRACT", cover, 0.5), 1.6, g.math("SUBTRACT", 1.25, r))
    f = g.remap(f, 0.3, 0.55, 0.0, 1.0, smooth=True)
    grain = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.1, 0.2) * MM), detail=2.0)
    blot = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.8, 1.5) * MM), detail=2.0)
    base = np.asarray(m.base_color)
    if rust:
        dark, light = base * 0.45, np.minimum(base * np.array([1.8, 1.9, 1.5]), 1.0)
    else:  # white rust: chalky, with grey flecks where it pitted
        dark, light = base * 0.7, np.minimum(base * 1.12, 1.0)
    crust = g.mix(g.remap(grain, 0.3, 0.7, 0.0, 1.0), dark, light)
    crust = _scale_color(g, crust, g.remap(blot, 0.3, 0.7, 0.7, 1.15))
    g.set(p.inputs["Base Color"], g.mix(f, u["Base Color"], crust))
    g.set(p.inputs["Metallic"], g.mix(f, u["Metallic"], 0.0, kind="FLOAT"))
    g.set(p.inputs["Anisotropic"], g.mix(f, u["Anisotropic"], 0.0, kind="FLOAT"))
    rough = g.math("MULTIPLY_ADD", grain, 0.15, float(m.roughness) - 0.07)
    g.set(p.inputs["Roughness"], g.mix(f, u["Roughness"], rough, kind="FLOAT"))
    if not rust:  # powdery: a soft sheen
        g.set(p.inputs["Sheen Weight"], g.math("MULTIPLY", f, 0.5))
    height = g.math(
        "MULTIPLY", g.math("MULTIPLY_ADD", grain, 0.6, g.math("MULTIPLY", blot, 0.4)), f
    )
    g.set(p.inputs["Normal"], g.bump(height, 0.6 if rust else 0.3, 0.05 * MM, u["Normal"]))


def _flow_marks(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Flow marks: wavy bands, ``spacing_mm`` apart, in arcs about the gate the melt came
    from (``gate_x``...), alternately glossy (the surface) and hazy (the defect), with a
    faint relief across them; fading out towards the patch's outline."""
    u = _under(g, p, m)
    gate = (m.param("gate_x", -0.02), m.param("gate_y", 0.0), m.param("gate_z", 0.0))
    spacing = max(m.param("spacing_mm", 1.0), 0.1) * MM
    contrast = _clamp01(m.param("contrast", 0.6))
    rel = g.vmath("SUBTRACT", g.coords(), gate)
    dist = g.vmath("LENGTH", rel)
    # The fronts wave along their length (3-6 mm) and drift a little in spacing.
    wob = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(3.0, 6.0) * MM), detail=2.0)
    phase = g.math("MULTIPLY_ADD", dist, 2 * math.pi / spacing, rng.uniform(0, 2 * math.pi))
    phase = g.math("MULTIPLY_ADD", wob, rng.uniform(4.0, 7.0), phase)
    wave = g.math("SINE", phase)
    band = g.remap(wave, -0.3, 0.9, 0.0, 1.0, smooth=True)
    fade = g.remap(_patch_radius(g, m), 0.55, 1.0, 1.0, 0.3, smooth=True)
    k = g.math("MULTIPLY", g.math("MULTIPLY", band, fade), 0.4 + 0.6 * contrast)
    s = _surface_of(m)
    shift = tuple(float(a - b) for a, b in zip(m.base_color, s.base_color, strict=True))
    hazy = g.mix(1.0, u["Base Color"], g.vec(*shift), blend="ADD", clamp=True)
    g.set(p.inputs["Base Color"], g.mix(k, u["Base Color"], hazy))
    rough = g.math("ADD", u["Roughness"], float(m.roughness) - s.roughness)
    g.set(p.inputs["Roughness"], g.mix(k, u["Roughness"], rough, kind="FLOAT", clamp=True))
    normal = u["Normal"]
    across = g.across(rel, normal)
    slope = g.math("MULTIPLY", g.math("COSINE", phase), g.math("MULTIPLY", fade, 0.04 * contrast))
    g.set(p.inputs["Normal"], g.tilt(normal, across, slope))


def _dust(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Dust and lint: pale grey, matte and fuzzy (a strong sheen), grainy and fibrous."""
    g.set(p.inputs["Metallic"], 0.0)
    g.set(p.inputs["Specular IOR Level"], 0.3)
    g.set(p.inputs["Sheen Weight"], 0.8)
    g.set(p.inputs["Sheen Roughness"], 0.5)
    grain = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.04, 0.08) * MM), detail=2.0)
    # Fibres: noise stretched 8x along a random direction.
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    stretch = np.ones(3) + 7.0 * np.abs(a)
    fib = g.noise(
        g.vmath("MULTIPLY", _offset(g, rng, 1.0), tuple(1.0 / stretch)), 1.0 / (0.05 * MM), 1.0
    )
    k = g.math("MULTIPLY", g.remap(grain, 0.3, 0.7, 0.8, 1.12), g.remap(fib, 0.3, 0.7, 0.9, 1.08))
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    g.set(p.inputs["Roughness"], g.math("MULTIPLY_ADD", grain, 0.1, 0.88, clamp=True))
    g.set(p.inputs["Normal"], g.bump(grain, 0.3, 0.02 * MM))


def _brushed_steel(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Brushed steel plate: streaks along object x, anisotropic across them."""
    rough0 = float(m.roughness)
    P = _offset(g, rng, 1.0)
    # Streaks: noise squashed 200x along x: features ~100 mm long and 0.5 mm wide, with
    # finer ones from the noise detail.
    streak_v = g.vmath("MULTIPLY", P, (1.0 / 200.0, 1.0, 1.0))
    streak = g.noise(streak_v, 1.0 / (0.5 * MM), detail=2.0, roughness=0.65)
    blot = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(60, 120) * MM), detail=0.0)
    rough = g.math("MULTIPLY", rough0, g.remap(blot, 0.3, 0.7, 0.9, 1.1))
    rough = g.math("MULTIPLY", rough, g.remap(streak, 0.3, 0.7, 0.85, 1.15), clamp=True)
    g.set(p.inputs["Roughness"], rough)
    k = g.math("MULTIPLY", g.remap(streak, 0.3, 0.7, 0.9, 1.06), g.remap(blot, 0.3, 0.7, 0.95, 1))
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    g.set(p.inputs["Anisotropic"], _clamp01(m.param("anisotropy", 0.75)))
    normal = g.geometry().outputs["Normal"]
    across = g.across((0.0, 1.0, 0.0), normal)
    g.set(p.inputs["Tangent"], across)
    g.set(p.inputs["Normal"], g.tilt(normal, across, g.math("MULTIPLY_ADD", streak, 0.06, -0.03)))


def _wood(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """A wooden bench top: boards along x with flat-sawn growth rings and pores."""
    g.set(p.inputs["Metallic"], 0.0)
    board_w = rng.uniform(0.09, 0.14) * m.param("board_scale", 1.0)
    P = _offset(g, rng, 0.5)
    x, y, z = g.xyz(P)
    board = g.math("FLOOR", g.math("DIVIDE", y, board_w))
    br = g.new("ShaderNodeTexWhiteNoise", noise_dimensions="1D")
    g.set(br.inputs["W"], g.math("ADD", board, rng.uniform(0, 100)))
    b = br.outputs["Value"]
    # Growth rings of a log below the board, its axis along x but tilted a little per board
    # (so the cut crosses the rings: the flat-sawn "cathedral" arcs), distorted by noise.
    y_loc = g.math("WRAP", y, 0.0, board_w)
    dy = g.math("SUBTRACT", y_loc, g.math("MULTIPLY", b, board_w))
    tilt = g.math("MULTIPLY_ADD", b, 0.16, -0.08)
    dz = g.math("MULTIPLY_ADD", x, tilt, g.math("ADD", z, rng.uniform(0.05, 0.15)))
    rho = g.math("SQRT", g.math("ADD", g.math("MULTIPLY", dy, dy), g.math("MULTIPLY", dz, dz)))
    distort = g.noise(g.vmath("MULTIPLY", P, (0.06, 1.0, 1.0)), 1.0 / (10 * MM), detail=1.0)
    rho = g.math("MULTIPLY_ADD", distort, 4 * MM, rho)
    ring_m = rng.uniform(1.5, 3.0) * MM
    ring = g.math("FRACT", g.math("MULTIPLY_ADD", rho, 1.0 / ring_m, g.math("MULTIPLY", b, 7)))
    late = g.math(
        "MULTIPLY",
        g.remap(ring, 0.78, 0.9, 0.0, 1.0, smooth=True),
        g.remap(ring, 1.0, 0.92, 0.0, 1.0, smooth=True),
    )
    # Fibres and pores: noise squashed 40x along the grain.
    pores = g.noise(g.vmath("MULTIPLY", P, (0.025, 1.0, 1.0)), 1.0 / (0.3 * MM), detail=1.0)
    seam = g.remap(y_loc, 0.0015, 0.0005, 0.0, 1.0)
    seam2 = g.remap(y_loc, board_w - 0.0015, board_w - 0.0005, 0.0, 1.0)
    seam = g.math("MAXIMUM", seam, seam2)
    k = g.math("MULTIPLY_ADD", b, 0.25, 0.88)
    k = g.math("MULTIPLY", k, g.math("MULTIPLY_ADD", late, -0.22, 1.0))
    k = g.math("MULTIPLY", k, g.remap(pores, 0.3, 0.7, 0.88, 1.06))
    k = g.math("MULTIPLY", k, g.math("MULTIPLY_ADD", seam, -0.6, 1.0))
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))
    rough0 = float(m.roughness)
    g.set(p.inputs["Roughness"], g.math("MULTIPLY_ADD", late, 0.15, rough0 - 0.05, clamp=True))


def _rubber_mat(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """A dark rubber mat: stippled, matte, with faint dusty patches."""
    g.set(p.inputs["Metallic"], 0.0)
    g.set(p.inputs["Specular IOR Level"], 0.4)
    stipple = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.4, 0.7) * MM), detail=0.0)
    dust = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(40, 80) * MM), detail=1.0)
    dust = g.remap(dust, 0.45, 0.75, 0.0, 1.0)
    rough0 = max(float(m.roughness), 0.6)
    rough = g.math("MULTIPLY_ADD", dust, 0.15, rough0)
    g.set(p.inputs["Roughness"], g.math("MULTIPLY_ADD", stipple, 0.15, rough, clamp=True))
    k = g.math("MULTIPLY_ADD", dust, 0.35, g.remap(stipple, 0.3, 0.7, 0.85, 1.12))
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, k))


def _painted(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """Painted metal or plastic: orange peel, and chipped to bare metal on worn edges."""
    wear = _clamp01(m.param("wear", 0.3))
    peel = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.8, 1.5) * MM), detail=0.0)
    chip_n = g.noise(
        _offset(g, rng, 1.0), 1.0 / (rng.uniform(1.5, 3.0) * MM), detail=2.0, roughness=0.7
    )
    blot = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(20, 40) * MM), detail=0.0)
    edge, edge_n = g.edges(0.5 * MM)
    # Chips: noise above a threshold that drops on edges and with wear.
    thresh = g.math("MULTIPLY_ADD", edge, -0.4 * wear, 0.72 - 0.15 * wear)
    chip = g.remap(g.math("SUBTRACT", chip_n, thresh), 0.0, 0.03, 0.0, 1.0)
    chip = g.math("MULTIPLY", chip, 1.0 if wear > 0 else 0.0)
    k = g.remap(blot, 0.3, 0.7, 0.93, 1.04)
    paint = _scale_color(g, m.base_color, k)
    g.set(p.inputs["Base Color"], g.mix(chip, paint, (0.45, 0.45, 0.46)))
    g.set(p.inputs["Metallic"], g.math("MULTIPLY", chip, 1.0))
    rough0 = float(m.roughness)
    rough = g.math("MULTIPLY", rough0, g.remap(blot, 0.3, 0.7, 0.9, 1.15))
    g.set(p.inputs["Roughness"], g.mix(chip, rough, 0.35, kind="FLOAT"))
    # Bump from the orange peel only: the Bump node evaluates its height three times.
    g.set(p.inputs["Normal"], g.bump(peel, 0.1, 0.01 * MM, edge_n))


def _cable(g: _Graph, p: Any, m: Material, rng: np.random.Generator) -> None:
    """A PVC cable sheath: dielectric, slight sheen, faint extrusion texture."""
    g.set(p.inputs["Metallic"], 0.0)
    g.set(p.inputs["Sheen Weight"], 0.3)
    g.set(p.inputs["Sheen Roughness"], 0.35)
    g.set(p.inputs["Specular IOR Level"], 0.55)
    grain = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(0.3, 0.5) * MM), detail=0.0)
    blot = g.noise(_offset(g, rng, 1.0), 1.0 / (rng.uniform(10, 20) * MM), detail=0.0)
    g.set(
        p.inputs["Roughness"],
        g.math("MULTIPLY", float(m.roughness), g.remap(blot, 0.3, 0.7, 0.85, 1.15)),
    )
    g.set(p.inputs["Base Color"], _scale_color(g, m.base_color, g.remap(grain, 0.3, 0.7, 0.9, 1.1)))


_BUILDERS: dict[str, Builder] = {
    "plain": _plain,
    "turned": _turned,
    "milled": _milled,
    "cast": _cast,
    "polymer": _polymer,
    "translucent": _translucent,
    "scratch": _scratch,
    "brushed_steel": _brushed_steel,
    "wood": _wood,
    "rubber_mat": _rubber_mat,
    "painted": _painted,
    "cable": _cable,
    "stain": _stain,
    "corrosion": _corrosion,
    "flow_marks": _flow_marks,
    "dust": _dust,
}


def _node_tree(idblock: Any) -> Any:
    """The node tree of a material or world (Blender < 5 needs nodes switched on)."""
    tree = idblock.node_tree
    if tree is None:
        idblock.use_nodes = True
        tree = idblock.node_tree
    return tree


def material(m: Material, name: str) -> bpy.types.Material:
    """A new bpy material named ``name`` that draws ``m`` (its finish, seeded by ``m.seed``).

    Texture coordinates are the object's own frame in metres (the part's axis is object z).
    An unknown finish is drawn plain (with a warning).
    """
    mat = bpy.data.materials.new(name)
    tree = _node_tree(mat)
    tree.nodes.clear()
    g = _Graph(tree)
    out = g.new("ShaderNodeOutputMaterial")
    p = g.new("ShaderNodeBsdfPrincipled")
    tree.links.new(p.outputs["BSDF"], out.inputs["Surface"])
    g.set(p.inputs["Base Color"], (*m.base_color, 1.0))
    g.set(p.inputs["Metallic"], float(m.metallic))
    g.set(p.inputs["Roughness"], float(m.roughness))
    builder = _BUILDERS.get(m.finish)
    if builder is None:
        log.warning("finish %r has no Blender look; drawing it plain", m.finish)
        builder = _plain
    builder(g, p, m, _rng(m))
    mat["twincell_finish"] = m.finish
    mat["twincell_seed"] = int(m.seed)
    return mat


# --- world ----------------------------------------------------------------------------------
# The studio and workshop are computed in numpy as an equirectangular radiance map and
# handed to Cycles as an in-memory float image (nothing is read from or written to disk):
# a path tracer evaluates the world at every bounce, so a texture lookup is far cheaper
# than a procedural node graph, and Cycles importance-samples the map's bright boxes.

#: Width of the environment map in pixels (height is half): 0.35 degrees per pixel.
ENV_WIDTH = 1024


def _env_grid(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Azimuth (W,) and elevation (H,) in degrees at the pixel centres of Blender's
    equirectangular mapping (u = atan2(y, -x) / 2 pi + 0.5, v = elevation / pi + 0.5; row 0
    at the bottom), and the unit directions (H, W, 3) float32 there."""
    h = width // 2
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(h) + 0.5) / h
    theta = (u - 0.5) * 2 * np.pi  # atan2(y, -x)
    elev = (v - 0.5) * np.pi
    ce = np.cos(elev)[:, None]
    d = np.empty((h, width, 3), dtype=np.float32)
    d[..., 0] = -np.cos(theta)[None, :] * ce
    d[..., 1] = np.sin(theta)[None, :] * ce
    d[..., 2] = np.sin(elev)[:, None]
    az = np.degrees(np.arctan2(np.sin(theta), -np.cos(theta)))
    return az, np.degrees(elev), d


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (either order), elementwise."""
    t = np.clip((x - np.float32(e0)) * np.float32(1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _unit(az_deg: float, el_deg: float) -> np.ndarray:
    """The unit direction at azimuth (from +x towards +y) and elevation, degrees."""
    a, e = math.radians(az_deg), math.radians(el_deg)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def _waves(d: np.ndarray, rng: np.random.Generator, n: int, freq: float) -> np.ndarray:
    """Smooth low-frequency variation in about [-1, 1] over directions: ``n`` random plane
    waves of angular frequency ``freq``."""
    out = np.zeros(d.shape[:2], dtype=np.float32)
    for _ in range(n):
        k = rng.normal(size=3)
        k *= freq / np.linalg.norm(k)
        out += np.cos(d @ k.astype(np.float32) + np.float32(rng.uniform(0, 2 * math.pi)))
    return out / np.float32(math.sqrt(n))


def _softbox(
    d: np.ndarray, az_deg: float, el_deg: float, half_w: float, half_h: float, soft: float
) -> np.ndarray:
    """Radiance factor (H, W) of a rectangular soft box facing the origin from
    ``az_deg``/``el_deg``: ``half_w``/``half_h`` are the tangents of its half-angles; the
    edge falls off over the fraction ``soft`` of them and the centre is a little hotter."""
    f = _unit(az_deg, el_deg)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, f).astype(np.float32)
    right = right.astype(np.float32)
    c = d @ f.astype(np.float32)
    cc = np.maximum(c, 1e-3)
    u = np.abs(d @ right) / cc / half_w
    v = np.abs(d @ up) / cc / half_h
    mask = _smoothstep(1.0, 1.0 - soft, u) * _smoothstep(1.0, 1.0 - soft, v) * (c > 0)
    return mask * (1.15 - 0.3 * (u * u + v * v) / 2)


def _studio_map(
    az: np.ndarray, el: np.ndarray, d: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A photo studio (H, W, 3) linear radiance: dark-grey sweep backdrop, a large key soft
    box front-left and high, a tall strip box on the right, a weak overhead fill."""
    z = d[..., 2]
    tone = rng.uniform(0.06, 0.1)
    # The sweep is lit where the boxes spill on it (near the horizon), dark overhead and
    # darker below (floor, table skirt), with faint unevenness of the paper.
    back = tone * (1.0 - 0.65 * _smoothstep(-0.1, 0.9, z)) * (1.0 - 0.5 * _smoothstep(0.0, -0.3, z))
    back = back * (1.0 + 0.15 * _waves(d, rng, 4, 3.0))
    rgb = back[..., None] * np.array([1.0, 1.0, 1.04])
    key = _softbox(
        d,
        135 + rng.uniform(-15, 15),
        40 + rng.uniform(-8, 8),
        0.55 * rng.uniform(0.85, 1.15),
        0.42 * rng.uniform(0.85, 1.15),
        0.25,
    )
    rgb += key[..., None] * (np.array([1.0, 0.98, 0.95]) * 2.5 * rng.uniform(0.85, 1.15))
    strip = _softbox(
        d,
        -40 + rng.uniform(-15, 15),
        25 + rng.uniform(-6, 6),
        0.12 * rng.uniform(0.8, 1.2),
        0.7 * rng.uniform(0.85, 1.15),
        0.3,
    )
    rgb += strip[..., None] * (np.array([0.95, 0.98, 1.0]) * 2.0 * rng.uniform(0.8, 1.2))
    top = _softbox(d, rng.uniform(0, 360), 75, 0.3, 0.3, 0.4)
    rgb += top[..., None] * (0.7 * rng.uniform(0.8, 1.2))
    # A large white reflector card low on the side opposite the key: soft fill that keeps
    # metal from reflecting only the dark backdrop.
    card = _softbox(d, -45 + rng.uniform(-20, 20), 12 + rng.uniform(-4, 4), 0.9, 0.35, 0.5)
    rgb += card[..., None] * (0.35 * rng.uniform(0.8, 1.2))
    return rgb


def _workshop_map(
    az: np.ndarray, el: np.ndarray, d: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A workshop hall (H, W, 3) linear radiance, seen from a bench about 1 m above the
    floor: a row of windows along +y, ceiling light strips, grey walls cluttered with
    shelves, cabinets and machines, a darker concrete floor; warm or cool per seed."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    tint = rng.uniform(-1.0, 1.0)  # < 0 cool, > 0 warm
    warm = np.array([1.0 + 0.06 * tint, 1.0, 1.0 - 0.1 * tint])
    wall = rng.uniform(0.07, 0.11) * (1.0 + 0.2 * _waves(d, rng, 4, 2.5))
    rgb = wall[..., None] * np.ones(3, dtype=np.float32)
    # Clutter: rectangles in azimuth x elevation (shelving, cabinets, machines, boxes),
    # most grey, a few painted machine colours; each blends only over its own rows/columns.
    paints = np.array([[0.35, 0.5, 0.4], [0.3, 0.4, 0.6], [0.8, 0.55, 0.1], [0.6, 0.6, 0.6]])
    for _ in range(int(rng.integers(30, 45))):
        a0 = rng.uniform(-180, 180)
        aw = rng.uniform(3, 25)
        e0 = rng.uniform(-8, 2)
        eh = rng.uniform(3, 25)
        da = (az - a0 + 180) % 360 - 180
        ma = _smoothstep(aw, aw - 0.5, np.abs(da))
        me = _smoothstep(e0, e0 + 0.4, el) * _smoothstep(e0 + eh, e0 + eh - 0.4, el)
        rows, cols = np.flatnonzero(me), np.flatnonzero(ma)
        m = np.outer(me[rows], ma[cols])[..., None].astype(np.float32)
        level = rng.uniform(0.02, 0.2)
        color = paints[rng.integers(len(paints))] if rng.random() < 0.3 else np.ones(3)
        idx = np.ix_(rows, cols)
        rgb[idx] = rgb[idx] * (1 - m) + m * (level * color).astype(np.float32)
    # Floor: dark concrete, a little lighter towards the horizon (grazing reflections).
    floor = (0.03 + 0.03 * _smoothstep(-0.5, 0.0, z)) * (1.0 + 0.2 * _waves(d, rng, 3, 6.0))
    below = _smoothstep(0.01, -0.03, z)[..., None]
    rgb = rgb * (1 - below) + below * (floor[..., None] * np.array([1.0, 0.96, 0.9]))
    # Ceiling: grey with the strip luminaires in rows, 2.5-3.5 m above the eye.
    hc = rng.uniform(2.5, 3.5)
    zc = np.maximum(z, 1e-3)
    cx, cy = x / zc * hc, y / zc * hc
    ceil = _smoothstep(0.3, 0.45, z)[..., None]
    rgb = rgb * (1 - ceil) + ceil * 0.06
    row = rng.uniform(2.0, 3.0)
    lng = rng.uniform(1.2, 1.8)
    across = (cy + rng.uniform(0, row)) % row - 0.5 * row
    along = (cx + rng.uniform(0, 3)) % (lng + 0.8) - 0.5 * (lng + 0.8)
    strip = _smoothstep(0.07, 0.05, np.abs(across)) * _smoothstep(
        0.5 * lng, 0.5 * lng - 0.04, np.abs(along)
    )
    strip = strip * (z > 0.05) * _smoothstep(25.0, 15.0, np.hypot(cx, cy))
    rgb += strip[..., None] * (np.array([1.0, 0.97, 0.9]) * warm * rng.uniform(9.0, 13.0))
    # Windows on the +y wall, 3-5 m away: panes between mullions, sill 0.2 m and head 2.2 m
    # above the eye, a transom at 1.5 m; daylight brighter and cooler towards the top.
    dist_w = rng.uniform(3.0, 5.0)
    t = dist_w / np.maximum(y, 1e-3)
    hw, zw = x * t, z * t
    pane = rng.uniform(1.2, 2.0)
    period = pane + rng.uniform(0.25, 0.5)
    hp = (hw + rng.uniform(0, period)) % period
    win = _smoothstep(0.0, 0.03, hp) * _smoothstep(pane, pane - 0.03, hp)
    win = win * _smoothstep(0.2, 0.25, zw) * _smoothstep(2.2, 2.15, zw)
    win = win * _smoothstep(0.04, 0.06, np.abs(zw - 1.5)) * _smoothstep(9.0, 8.0, np.abs(hw))
    win = win * (y > 0.02)
    sky = (1.6 + 1.4 * _smoothstep(0.2, 2.2, zw))[..., None] * np.array([0.85, 0.93, 1.05])
    outside = (0.35 + 0.65 * _smoothstep(0.3, 0.9, zw))[..., None]  # buildings, trees low
    rgb = rgb * (1 - win[..., None]) + win[..., None] * sky * outside * rng.uniform(0.85, 1.15)
    return rgb * warm


def _environment_image(kind: str, seed: int, width: int = ENV_WIDTH) -> np.ndarray:
    """The radiance map (H, W, 3) float32, linear RGB, of a "studio" or "workshop" at
    strength 1 and no rotation: a pure function of ``kind`` and ``seed``."""
    az, el, d = _env_grid(width)
    salt = 1 + ("studio", "workshop").index(kind)
    rng = np.random.default_rng([int(seed) % (2**32), salt])
    build = _studio_map if kind == "studio" else _workshop_map
    return build(az, el, d, rng).astype(np.float32)


def _environment_bpy_image(kind: str, seed: int) -> Any:
    """The in-memory float image of ``_environment_image`` (reused while kind and seed stay)."""
    name = f"twincell_env_{kind}_{int(seed)}"
    img = bpy.data.images.get(name)
    if img is not None:
        return img
    for old in [i for i in bpy.data.images if i.name.startswith("twincell_env_")]:
        bpy.data.images.remove(old)
    rgb = _environment_image(kind, seed)
    h, w = rgb.shape[:2]
    img = bpy.data.images.new(name, w, h, alpha=False, float_buffer=True)
    rgba = np.ones((h, w, 4), dtype=np.float32)
    rgba[..., :3] = rgb
    img.pixels.foreach_set(rgba.ravel())
    return img


def world(
    env: Environment,
    background: tuple[float, float, float],
    ambient: tuple[float, float, float],
) -> None:
    """Set the scene's world: ``env`` when it names one, else a flat ``ambient`` light.

    ``background`` is what the camera sees where no surface is hit (pyrender's clear colour)
    with ``env.kind`` "none"; a studio or workshop is seen as itself. The environment turns
    about world z by ``env.rotation_deg``, its radiance scales with ``env.strength`` and its
    layout varies with ``env.seed``. Calling it again with the same arguments keeps the
    world as it is (so Cycles keeps its light importance map).
    """
    scene = bpy.context.scene
    w = scene.world or bpy.data.worlds.new("twincell")
    scene.world = w
    key = repr((env, tuple(background), tuple(ambient)))
    if w.get("twincell_key") == key:
        return
    tree = _node_tree(w)
    tree.nodes.clear()
    g = _Graph(tree)
    out = g.new("ShaderNodeOutputWorld")
    bg = g.new("ShaderNodeBackground")
    tree.links.new(bg.outputs["Background"], out.inputs["Surface"])
    if env.kind in ("studio", "workshop"):
        img = _environment_bpy_image(env.kind, env.seed)
        tex = g.new(
            "ShaderNodeTexEnvironment", interpolation="Linear", projection="EQUIRECTANGULAR"
        )
        tex.image = img
        # The environment turns by +rotation_deg: look it up at R(-rotation) d.
        mp = g.new("ShaderNodeMapping", vector_type="VECTOR")
        g.set(mp.inputs["Rotation"], (0.0, 0.0, -math.radians(env.rotation_deg)))
        g.set(mp.inputs["Vector"], g.new("ShaderNodeTexCoord").outputs["Generated"])
        g.set(tex.inputs["Vector"], mp.outputs["Vector"])
        g.set(bg.inputs["Color"], tex.outputs["Color"])
        g.set(bg.inputs["Strength"], float(env.strength))
        w.cycles.sampling_method = "MANUAL"
        w.cycles.sample_map_resolution = 256
    else:
        if env.kind != "none":
            log.warning("environment %r unknown; using flat ambient light", env.kind)
        # Light with the ambient colour, but show the camera the background colour.
        cam = g.new("ShaderNodeLightPath").outputs["Is Camera Ray"]
        g.set(bg.inputs["Color"], g.mix(cam, (*ambient, 1.0), (*background, 1.0)))
        g.set(bg.inputs["Strength"], 1.0)
        w.cycles.sampling_method = "AUTOMATIC"
    w["twincell_key"] = key
