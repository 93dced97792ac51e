"""The SDK table: one place says which modules a driver needs and which extra installs them."""

from __future__ import annotations

import sys
import types

import pytest

from scenarios.drivers import base


@pytest.mark.parametrize("driver", ["ur", "realsense", "genicam"])
def test_a_driver_whose_sdk_is_absent_says_what_to_install(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk = base.SDKS[driver]
    for module in sdk.modules:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    why = base.missing_sdk(driver)
    assert why is not None and f"pip install 'twincell[{sdk.extra}]'" in why
    assert sdk.modules[0] in why
    with pytest.raises(base.DriverMissing, match=rf"twincell\[{sdk.extra}\]"):
        base.import_sdk(driver, sdk.modules[0])


@pytest.mark.parametrize("driver", ["ur", "realsense", "genicam"])
def test_a_driver_whose_sdk_is_there_passes_and_imports_it(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk = base.SDKS[driver]
    for module in sdk.modules:
        monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    assert base.missing_sdk(driver) is None
    assert base.import_sdk(driver, sdk.modules[-1]) is sys.modules[sdk.modules[-1]]


def test_a_submodule_of_an_absent_package_is_missing_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``harvesters.core`` with no ``harvesters`` at all: find_spec raises for the parent;
    that reads as "not installed"."""
    monkeypatch.setitem(base.SDKS, "x", base.Sdk("X", "x", ("no_such_pkg_twincell.core",)))
    assert "twincell[x]" in (base.missing_sdk("x") or "")


def test_drivers_without_an_sdk_need_nothing() -> None:
    for driver in ("sim", "turntable", "board", "opencv"):
        assert base.missing_sdk(driver) is None
