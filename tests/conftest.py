"""Shared pytest fixtures (generic: no test module's specifics belong here)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim.pyrender_backend import PyrenderRenderer


@pytest.fixture(scope="session")
def renderer_for() -> Callable[[int, int], PyrenderRenderer]:
    """``renderer_for(W, H)``: a session-wide off-screen renderer for W x H images.

    One renderer per image size, never resized and never closed by the tests: with EGL,
    deleting a pyrender context (what ``close()`` and a size change do) terminates the
    process-wide display and breaks every other live renderer. A GL context costs ~0.3 s.
    The upload cache is keyed by ``MeshItem.key``, so tests must give different meshes
    different keys (and different part ids, which the cell uses as keys).
    """
    cache: dict[tuple[int, int], PyrenderRenderer] = {}

    def get(width: int, height: int) -> PyrenderRenderer:
        if (width, height) not in cache:
            cache[(width, height)] = PyrenderRenderer()
        return cache[(width, height)]

    return get
