"""Explicit name -> factory registry of detectors; ``create`` validates names and parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from scenarios.interfaces import Detector, SpecError

_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register(name: str, factory: Callable[..., Detector]) -> None:
    """Register ``factory`` (called with keyword parameters) under ``name``; duplicates raise."""
    if not isinstance(name, str) or not name or name != name.strip() or " " in name:
        raise ValueError(f"detector name must be a non-empty string without spaces, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for detector {name!r} is not callable: {factory!r}")
    if name in _REGISTRY:
        raise ValueError(f"detector {name!r} is already registered")
    _REGISTRY[name] = factory


def available() -> list[str]:
    """Sorted names of every registered detector."""
    return sorted(_REGISTRY)


def _check_params(name: str, factory: Callable[..., Detector], params: dict[str, Any]) -> None:
    """Raise SpecError naming the first unknown or missing keyword parameter of ``factory``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: let the factory decide
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = {p.name: p for p in signature.parameters.values() if p.kind in kinds}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if not takes_any:
        for key in sorted(params):
            if key not in accepted:
                allowed = ", ".join(sorted(accepted)) or "(none)"
                raise SpecError(f"detector {name!r}: unknown parameter {key!r}; allowed: {allowed}")
    for key, param in accepted.items():
        if param.default is inspect.Parameter.empty and key not in params:
            raise SpecError(f"detector {name!r}: missing required parameter {key!r}")


def create(name: str, **params: Any) -> Detector:
    """Build the detector registered as ``name`` with keyword ``params``; bad input -> SpecError."""
    factory = _REGISTRY.get(name)
    if factory is None:
        allowed = ", ".join(available()) or "(none registered)"
        raise SpecError(f"unknown detector {name!r}; allowed: {allowed}")
    _check_params(name, factory, params)
    detector = factory(**params)
    if not isinstance(detector, Detector):
        raise TypeError(f"factory for detector {name!r} returned a non-Detector: {detector!r}")
    return detector
