"""Explicit name -> factory registry of detectors; ``create`` validates names and parameters.

A detector registers with a pydantic model of its parameters (types and ranges); the
scenario loader calls ``validate_params`` so a bad parameter is reported when the scenario
file is read, naming the field, never after a simulation. A factory registered without a
model has its keyword names checked from its signature only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from scenarios.interfaces import (
    Detector,
    SpecError,
    allowed,
    detector_level,
    excerpt,
    validation_error_line,
)

_REGISTRY: dict[str, Callable[..., Detector]] = {}
_PARAMS: dict[str, Any] = {}


def register(name: str, factory: Callable[..., Detector], params: Any = None) -> None:
    """Register ``factory`` (called with keyword parameters) under ``name``; duplicates raise.

    ``params`` is the pydantic model of the factory's keyword parameters (or None).
    """
    if not isinstance(name, str) or not name or name != name.strip() or " " in name:
        raise ValueError(f"detector name must be a non-empty string without spaces, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for detector {name!r} is not callable: {factory!r}")
    if name in _REGISTRY:
        raise ValueError(f"detector {name!r} is already registered")
    _REGISTRY[name] = factory
    _PARAMS[name] = params


def available() -> list[str]:
    """Sorted names of every registered detector."""
    return sorted(_REGISTRY)


def level(name: str) -> str:
    """What detector ``name`` decides on: ``"view"`` (a real/twin pair) or ``"part"`` (a
    whole part's fused cloud); its factory's ``level`` attribute, ``"view"`` if none."""
    if name not in _REGISTRY:
        raise SpecError(f"unknown detector {excerpt(name)}; {allowed(name, available())}")
    return detector_level(_REGISTRY[name])


def describe_weights(name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The weights detector ``name`` would use with ``params`` (its factory's
    ``describe_weights``), or None when the detector does not say."""
    describe = getattr(_REGISTRY.get(name), "describe_weights", None)
    return None if describe is None else dict(describe(params))


def check_params_model(model: Any, params: dict[str, Any], where: str) -> dict[str, Any]:
    """``params`` validated by pydantic ``model``: the full keyword dict, or SpecError naming
    ``<where>.<field>`` and what is allowed."""
    from pydantic import ValidationError

    try:
        validated = model.model_validate(params)
    except ValidationError as err:
        raise SpecError(validation_error_line(err, model, prefix=where)) from None
    return dict(validated.model_dump())


def _accepted_names(
    factory: Callable[..., Detector], model: Any
) -> tuple[set[str], bool, set[str]]:
    """(accepted keyword names, takes any keyword, required names) of a factory."""
    if model is not None:
        fields = model.model_fields
        return set(fields), False, {k for k, f in fields.items() if f.is_required()}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: let the factory decide
        return set(), True, set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = {p.name: p for p in signature.parameters.values() if p.kind in kinds}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    required = {k for k, p in accepted.items() if p.default is inspect.Parameter.empty}
    return set(accepted), takes_any, required


def validate_params(name: str, params: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The keyword parameters of detector ``name``, checked; SpecError naming the first bad one.

    ``where`` is the dotted path of ``params`` in the user's file (``detectors.0.params``).
    Unknown and missing names are reported first (with the allowed names), then types and
    ranges from the detector's parameter model, if it registered one.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise SpecError(f"unknown detector {excerpt(name)}; {allowed(name, available())}")
    where = where or f"detectors.{name}.params"
    model = _PARAMS.get(name)
    accepted, takes_any, required = _accepted_names(factory, model)
    if not takes_any:
        for key in sorted(params, key=str):
            if key not in accepted:
                raise SpecError(
                    f"{where}: unknown parameter {excerpt(key)} of {name}; "
                    + allowed(key, sorted(accepted))
                )
    for key in sorted(required):
        if key not in params:
            raise SpecError(f"{where}: missing required parameter {key!r} of {name}")
    if model is None:
        return dict(params)
    return check_params_model(model, params, where)


def create(name: str, **params: Any) -> Detector:
    """Build the detector registered as ``name`` with keyword ``params``; bad input -> SpecError."""
    checked = validate_params(name, params)
    detector = _REGISTRY[name](**checked)
    if not isinstance(detector, Detector):
        raise TypeError(f"factory for detector {name!r} returned a non-Detector: {detector!r}")
    return detector
