"""The simulated inspection cell: geometry, viewpoints, scene, parts and defects, renderers."""
