"""Shared pytest fixtures (generic: no test module's specifics belong here)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim.render.pyrender_backend import PyrenderRenderer


@pytest.fixture(scope="session")
def renderer_for() -> Callable[[int, int], PyrenderRenderer]:
    """``renderer_for(W, H)``: a session-wide off-screen renderer for W x H images.

    All renderers share the process's one GL context (see ``sim.render.pyrender_backend``); each
    keeps its own upload cache, keyed by ``MeshItem.key``, so tests must give different
    meshes different keys.
    """
    cache: dict[tuple[int, int], PyrenderRenderer] = {}

    def get(width: int, height: int) -> PyrenderRenderer:
        if (width, height) not in cache:
            cache[(width, height)] = PyrenderRenderer()
        return cache[(width, height)]

    return get
