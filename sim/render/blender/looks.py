"""Blender materials and world from the backend-neutral description (runs inside the worker).

Imports bpy: only the Blender worker process imports this module.

MINIMAL FIRST VERSION: every finish is drawn as a plain Principled BSDF and the world is a
flat colour. The procedural finishes (turning rings, milling arcs, cast grain, polymers,
scratch grooves, bench tops, clutter) and the studio/workshop worlds replace it.
"""

from __future__ import annotations

import bpy

from sim.render import Environment, Material


def material(m: Material, name: str) -> bpy.types.Material:
    """A new bpy material named ``name`` that draws ``m`` (its finish, seeded by ``m.seed``).

    Texture coordinates are the object's own frame in metres (the part's axis is object z).
    """
    mat = bpy.data.materials.new(name)
    tree = mat.node_tree
    if tree is None:  # Blender < 5 needs nodes switched on
        mat.use_nodes = True
        tree = mat.node_tree
    bsdf = tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*m.base_color, 1.0)
    bsdf.inputs["Metallic"].default_value = float(m.metallic)
    bsdf.inputs["Roughness"].default_value = float(m.roughness)
    return mat


def world(
    env: Environment,
    background: tuple[float, float, float],
    ambient: tuple[float, float, float],
) -> None:
    """Set the scene's world: ``env`` when it names one, else a flat ``ambient`` light.

    ``background`` is what the camera sees where no surface is hit (pyrender's clear colour).
    """
    scene = bpy.context.scene
    w = scene.world or bpy.data.worlds.new("twincell")
    scene.world = w
    tree = w.node_tree
    if tree is None:
        w.use_nodes = True
        tree = w.node_tree
    bg = tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (*ambient, 1.0)
    bg.inputs["Strength"].default_value = 1.0
