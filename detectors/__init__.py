"""Anomaly detectors behind the one Detector interface (never imports sim)."""

from detectors.avatar import AVATAR, AVATARParams
from detectors.cosarad.detector import COSARAD, COSARADParams
from detectors.padim import PaDiM, PaDiMParams
from detectors.patchcore import PatchCore, PatchCoreParams
from detectors.registry import (
    available,
    create,
    describe_weights,
    level,
    register,
    validate_params,
)
from detectors.residual import GradientResidual, ResidualParams, RGBResidual, SSIMResidual


def _register_builtins() -> None:
    """Register the built-in detectors under their public names (once, at import)."""
    for cls in (RGBResidual, GradientResidual, SSIMResidual):
        register(cls.name, cls, params=ResidualParams)
    register(PaDiM.name, PaDiM, params=PaDiMParams)
    register(PatchCore.name, PatchCore, params=PatchCoreParams)
    register(AVATAR.name, AVATAR, params=AVATARParams)
    register(COSARAD.name, COSARAD, params=COSARADParams)


_register_builtins()

__all__ = [
    "available",
    "create",
    "describe_weights",
    "level",
    "register",
    "validate_params",
]
