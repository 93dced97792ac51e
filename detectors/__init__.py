"""Anomaly detectors behind the one Detector interface (never imports sim)."""

from detectors.registry import available, create, register
from detectors.residual import GradientResidual, RGBResidual, SSIMResidual


def _register_builtins() -> None:
    """Register the built-in detectors under their public names (once, at import)."""
    for cls in (RGBResidual, GradientResidual, SSIMResidual):
        register(cls.name, cls)


_register_builtins()

__all__ = ["available", "create", "register"]
