"""Tests of the detector registry and of the rule that detectors never import sim."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import detectors
from detectors import registry
from detectors.residual import RGBResidual
from scenarios.interfaces import Detector, SpecError

DETECTORS_DIR = Path(detectors.__file__).resolve().parent
REPO_ROOT = DETECTORS_DIR.parent


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register names without leaking them into the global registry."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_available_is_sorted_and_has_builtins() -> None:
    """available() lists the built-ins, sorted."""
    names = detectors.available()
    assert names == sorted(names)
    assert {"rgb_residual", "gradient_residual", "ssim_residual"} <= set(names)


def test_create_returns_configured_detector() -> None:
    """create builds a Detector with the given parameters and the registered name."""
    det = detectors.create("rgb_residual", sigma_px=1.0, dilate_px=3)
    assert isinstance(det, Detector) and isinstance(det, RGBResidual)
    assert det.name == "rgb_residual"
    assert (det.sigma_px, det.dilate_px) == (1.0, 3)


def test_unknown_name_lists_allowed_names() -> None:
    """An unknown detector raises a one-line SpecError naming it and every allowed name."""
    with pytest.raises(SpecError) as info:
        detectors.create("no_such_detector")
    message = str(info.value)
    assert "\n" not in message
    assert "no_such_detector" in message
    for name in detectors.available():
        assert name in message


def test_unknown_param_is_named() -> None:
    """An unexpected keyword parameter raises SpecError naming it and the allowed ones."""
    with pytest.raises(SpecError, match="'sigma'.*allowed: sigma_px, dilate_px"):
        detectors.create("ssim_residual", sigma=1.0)


@pytest.mark.usefixtures("isolated_registry")
def test_duplicate_register_raises() -> None:
    """Registering a taken name raises ValueError, built-in or not."""
    with pytest.raises(ValueError, match="already registered"):
        detectors.register("rgb_residual", RGBResidual)
    detectors.register("my_rgb", RGBResidual)
    with pytest.raises(ValueError, match="my_rgb"):
        detectors.register("my_rgb", RGBResidual)


@pytest.mark.usefixtures("isolated_registry")
def test_register_then_create_and_missing_required_param() -> None:
    """A registered factory is created by name; a missing required parameter is named."""

    def factory(threshold: float) -> Detector:
        det = RGBResidual()
        det.normaliser = threshold
        return det

    detectors.register("custom", factory)
    assert "custom" in detectors.available()
    assert detectors.create("custom", threshold=2.0).predict is not None
    with pytest.raises(SpecError, match="'threshold'"):
        detectors.create("custom")


@pytest.mark.parametrize("bad", ["", " x", "a b"])
def test_register_rejects_bad_names(bad: str) -> None:
    """Empty names or names with spaces are refused."""
    with pytest.raises(ValueError):
        detectors.register(bad, RGBResidual)


#: The only detectors modules that import torch at module level: the backbones, which
#: nothing imports unless a learned detector is built (torch is imported only inside the
#: modules that need it).
TORCH_MODULES = {
    "detectors/backbones/resnet.py",
    "detectors/backbones/vit.py",
    "detectors/cosarad/pointnet2.py",
}


def _imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    """Top-level-qualified module names imported by one source file (anywhere in it, or
    only at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


@pytest.mark.parametrize("path", sorted(DETECTORS_DIR.rglob("*.py")), ids=lambda p: p.name)
def test_detector_sources_import_only_allowed_first_party(path: Path) -> None:
    """detectors/* never imports sim; of scenarios only scenarios.interfaces; torch only
    inside functions, except in the backbone modules (``TORCH_MODULES``)."""
    for module in _imported_modules(path):
        root = module.split(".")[0]
        assert root != "sim", f"{path.name} imports {module}"
        if root == "scenarios":
            assert module == "scenarios.interfaces", f"{path.name} imports {module}"
    if _rel(path) not in TORCH_MODULES:
        top = {m.split(".")[0] for m in _imported_modules(path, top_level_only=True)}
        assert "torch" not in top, f"{path.name} imports torch at module level"


def test_importing_detectors_does_not_load_sim() -> None:
    """In a fresh interpreter, importing every detectors module but the backbones leaves sim
    and torch unloaded: a run with the residual baselines never loads torch."""
    modules = sorted(
        "detectors." + ".".join(p.relative_to(DETECTORS_DIR).with_suffix("").parts)
        for p in DETECTORS_DIR.rglob("*.py")
        if p.name != "__init__.py" and _rel(p) not in TORCH_MODULES
    )
    code = (
        "import sys, importlib\n"
        f"for m in ['detectors', *{modules!r}]: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sim', 'torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"importing detectors loaded: {out.stdout.strip()}"
