"""The Blender backend: Cycles (CPU) in a persistent worker process behind ``Renderer``.

Importing this package does not import bpy (only the worker process does), so it is safe
everywhere; ``BlenderRenderer`` raises ``BlenderUnavailable`` on its first render if bpy is
missing. Modules: ``client`` (the parent side), ``worker`` (the process main loop), ``scene``
(the bpy scene kept in sync with frames) and ``looks`` (materials and world).
"""

from sim.render.blender.client import BlenderRenderer, BlenderUnavailable, CyclesSettings

__all__ = ["BlenderRenderer", "BlenderUnavailable", "CyclesSettings"]
