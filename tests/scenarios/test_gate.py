"""The CI gate: expectations parsed against the scenario, verdicts, exit codes, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scenarios.cli import main
from scenarios.gate import judge, junit_xml, parse_expectation
from scenarios.interfaces import EXIT_EXPECTATION, EXIT_INPUT, EXIT_OK, SpecError

LEVELS = {"rgb_residual": "view", "padim-v1.2": "view", "cosarad": "part"}


def test_expectations_parse_against_the_scenarios_detectors() -> None:
    e = parse_expectation("rgb_residual.i_auroc >= 0.8", LEVELS)
    assert (e.detector, e.metric, e.op, e.value) == ("rgb_residual", "i_auroc", ">=", 0.8)
    # A label with dots: the metric is after the last one.
    assert parse_expectation("padim-v1.2.aupro<0.5", LEVELS).detector == "padim-v1.2"
    assert parse_expectation("cosarad.o_auroc > 0.7", LEVELS).metric == "o_auroc"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("rgb_residual i_auroc >= 0.8", "write <detector>.<metric> <op> <value>"),
        ("rgb_residual.i_auroc => 0.8", "write <detector>.<metric>"),
        ("rgb_resdual.i_auroc >= 0.8", "no detector 'rgb_resdual'.*allowed: rgb_residual"),
        ("rgb_residual.o_auroc >= 0.8", "rgb_residual has no metric 'o_auroc'"),
        ("cosarad.aupro >= 0.8", "cosarad has no metric 'aupro'.*o_auroc"),
        ("rgb_residual.i_auroc >= high", "'high' is not a number"),
        ("rgb_residual.i_auroc >= nan", "finite"),
    ],
)
def test_bad_expectations_are_one_line_errors(text: str, match: str) -> None:
    with pytest.raises(SpecError, match=match) as err:
        parse_expectation(text, LEVELS)
    assert "\n" not in str(err.value) and str(err.value).startswith("--expect")


def test_verdicts_and_junit() -> None:
    exps = [
        parse_expectation("rgb_residual.i_auroc >= 0.8", LEVELS),
        parse_expectation("rgb_residual.p_auroc < 0.5", LEVELS),
        parse_expectation("rgb_residual.i_ap == 1", LEVELS),
    ]
    metrics = {"rgb_residual": {"i_auroc": 0.85, "p_auroc": 0.9, "i_ap": None}}
    verdicts = judge(exps, metrics)
    assert [v.passed for v in verdicts] == [True, False, False]
    assert verdicts[1].line() == "FAIL rgb_residual.p_auroc < 0.5: 0.9000"
    assert "undefined" in verdicts[2].line()  # an undefined metric fails
    root = ET.fromstring(junit_xml(verdicts, "tiny", 1.5))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.find("failure") is None for c in cases] == [True, False, False]
    assert cases[0].get("name") == "rgb_residual.i_auroc >= 0.8"


@pytest.mark.slow
def test_check_exit_codes_and_the_same_verdict_on_rerun(tmp_path: Path) -> None:
    out = tmp_path / "run"
    junit = tmp_path / "gate.xml"
    args = ["check", "tiny", "--out", str(out), "-q", "--junit", str(junit)]
    # A bad expectation is refused before anything runs.
    assert main([*args, "--expect", "rgb_residual.nope >= 0.5"]) == EXIT_INPUT
    assert not out.exists()
    ok = main([*args, "--expect", "rgb_residual.p_auroc >= 0.0"])
    assert ok == EXIT_OK
    p_auroc = json.loads((out / "metrics.json").read_text())["detectors"]["rgb_residual"]["p_auroc"]
    above = f"rgb_residual.p_auroc > {p_auroc + 0.01:.4f}"
    first = main([*args, "--expect", above, "--expect", "ssim_residual.p_auroc >= 0"])
    xml_first = junit.read_bytes()
    assert first == EXIT_EXPECTATION
    again = main([*args, "--expect", above, "--expect", "ssim_residual.p_auroc >= 0"])
    assert again == EXIT_EXPECTATION
    root = ET.fromstring(xml_first)
    assert root.get("failures") == "1" and root.get("tests") == "2"
    assert [c.get("name") for c in ET.fromstring(junit.read_bytes()).iter("testcase")] == [
        c.get("name") for c in root.iter("testcase")
    ]
