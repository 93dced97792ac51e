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


def _tiny_with(tmp_path: Path, expect: list[str]) -> Path:
    import yaml

    from scenarios.spec import bundled_scenarios

    data = yaml.safe_load(bundled_scenarios()["tiny"].read_text())
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump({**data, "expect": expect}))
    return path


def test_expectations_in_the_scenario_are_checked_at_load_and_leave_the_digest() -> None:
    from scenarios.spec import load_scenario, parse_scenario

    base = load_scenario("tiny")
    data = base.model_dump(mode="json")
    gated = parse_scenario({**data, "expect": ["ssim_residual.p_auroc >= 0.8"]})
    assert gated.expect == ("ssim_residual.p_auroc >= 0.8",)
    assert gated.digest() == base.digest()  # a threshold judges a run, it does not change it
    with pytest.raises(SpecError, match=r"expect\.1: no detector 'ssim' .*allowed") as err:
        parse_scenario({**data, "expect": ["rgb_residual.aupro > 0", "ssim.aupro > 0"]})
    assert "\n" not in str(err.value)
    # A text with ": " in it is named by its place, not cut at the colon.
    with pytest.raises(SpecError, match=r"^scenario: expect\.0: write <detector>"):
        parse_scenario({**data, "expect": ["rgb_residual.p_auroc: 0.5"]})


def test_check_needs_an_expectation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["check", "tiny", "--out", str(out)]) == EXIT_INPUT
    assert "--expect: give at least one expectation" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_check_judges_the_scenarios_own_expectations_and_the_flags(tmp_path: Path) -> None:
    path = _tiny_with(tmp_path, ["rgb_residual.p_auroc >= 0", "ssim_residual.p_auroc > 1"])
    junit = tmp_path / "gate.xml"
    args = ["check", str(path), "--out", str(tmp_path / "run"), "-q", "--junit", str(junit)]
    assert main([*args, "--expect", "ssim_residual.i_auroc >= 0"]) == EXIT_EXPECTATION
    names = [c.get("name") for c in ET.fromstring(junit.read_bytes()).iter("testcase")]
    assert names == [
        "rgb_residual.p_auroc >= 0",
        "ssim_residual.p_auroc > 1",
        "ssim_residual.i_auroc >= 0",
    ]
    failures = [c for c in ET.fromstring(junit.read_bytes()).iter("failure")]
    assert len(failures) == 1 and "ssim_residual.p_auroc > 1" in (failures[0].text or "")
