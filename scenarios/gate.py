"""The CI gate: expectations on a run's metrics, their verdict, and a JUnit XML report.

An expectation is ``<detector>.<metric> <op> <value>``, e.g. ``ssim_residual.p_auroc >= 0.9``:
``<detector>`` is a scenario entry's key (its label, or the detector's name), ``<metric>``
one of that detector's metrics (``METRIC_NAMES`` for a view-level detector,
``PART_METRIC_NAMES`` for a part-level one), ``<op>`` one of ``>= > <= < ==`` and
``<value>`` a number in the metrics' own unit (fractions: 0.9, not 90). Expectations are
checked against the scenario before anything runs, so a typo costs no simulation; an
undefined metric (the test split lacks a class) fails its expectation. A run is a pure
function of scenario and seed, so the same seed gives the same verdict.
"""

from __future__ import annotations

import math
import operator
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenarios.interfaces import SpecError, allowed, excerpt
from scenarios.metrics import METRIC_NAMES, PART_METRIC_NAMES

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_EXPECTATION = re.compile(r"^\s*(?P<lhs>\S+?)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class Expectation:
    """``detector.metric op value``, as the user wrote it (``text``)."""

    detector: str
    metric: str
    op: str
    value: float
    text: str

    def holds(self, actual: float | None) -> bool:
        """Whether ``actual`` meets it (an undefined metric never does)."""
        if actual is None or not math.isfinite(actual):
            return False
        return OPERATORS[self.op](actual, self.value)


@dataclass(frozen=True)
class Verdict:
    """One expectation checked against a run: the metric's value (None: undefined)."""

    expectation: Expectation
    actual: float | None
    passed: bool

    def line(self) -> str:
        """One line: PASS/FAIL, the expectation and the value found."""
        got = (
            "undefined (the test split lacks a class, or has no ground truth)"
            if self.actual is None
            else f"{self.actual:.4f}"
        )
        return f"{'PASS' if self.passed else 'FAIL'} {self.expectation.text}: {got}"


def parse_expectation(text: str, levels: Mapping[str, str], where: str = "") -> Expectation:
    """Parse one expectation against the scenario's detectors (``levels``: key -> "view" or
    "part"); SpecError (one line, starting with ``where``: by default ``--expect`` and the
    text) when it cannot hold."""
    where = where or f"--expect {excerpt(text)}"
    m = _EXPECTATION.match(text)
    if m is None or "." not in m["lhs"]:
        raise SpecError(
            f"{where}: write <detector>.<metric> <op> <value>, e.g. 'rgb_residual.i_auroc >= 0.8'"
        )
    detector, metric = m["lhs"].rsplit(".", 1)  # labels may hold dots; metrics never do
    if detector not in levels:
        raise SpecError(
            f"{where}: no detector {excerpt(detector)} in the scenario; "
            + allowed(detector, list(levels))
        )
    names = PART_METRIC_NAMES if levels[detector] == "part" else METRIC_NAMES
    if metric not in names:
        raise SpecError(
            f"{where}: {detector} has no metric {excerpt(metric)}; {allowed(metric, list(names))}"
        )
    try:
        value = float(m["value"])
    except ValueError:
        raise SpecError(f"{where}: {excerpt(m['value'])} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"{where}: the value must be finite")
    return Expectation(
        detector, metric, m["op"], value, f"{detector}.{metric} {m['op']} {m['value']}"
    )


def judge(
    expectations: Sequence[Expectation], metrics: Mapping[str, Mapping[str, Any]]
) -> list[Verdict]:
    """Each expectation against ``metrics`` (``metrics.json``'s ``detectors``)."""
    verdicts = []
    for e in expectations:
        v = metrics.get(e.detector, {}).get(e.metric)
        actual = None if v is None or not math.isfinite(float(v)) else float(v)
        verdicts.append(Verdict(e, actual, e.holds(actual)))
    return verdicts


def junit_xml(verdicts: Sequence[Verdict], suite: str, seconds: float) -> bytes:
    """JUnit XML: one test suite (the scenario), one test case per expectation, a failure
    element with the one-line reason for each that did not hold."""
    failures = sum(not v.passed for v in verdicts)
    root = ET.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(verdicts)),
        failures=str(failures),
        errors="0",
        time=f"{seconds:.3f}",
    )
    for v in verdicts:
        case = ET.SubElement(ts, "testcase", classname=f"twincell.{suite}", name=v.expectation.text)
        if not v.passed:
            ET.SubElement(case, "failure", message=v.line()).text = v.line()
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, verdicts: Sequence[Verdict], suite: str, seconds: float) -> None:
    """Write ``junit_xml`` to ``path`` atomically."""
    from scenarios.rundir import write_bytes

    write_bytes(path, junit_xml(verdicts, suite, seconds))
