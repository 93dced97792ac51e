"""Generated scenario files, good and bad: the CLI answers exit 0 or 2, never a traceback.

Each example is written to a file and given to ``twincell validate`` and ``twincell run``
(whose engine is replaced by a sentinel, so a valid file stops right where the run would
begin). On exit 2 the error is one bounded line and nothing was written; a valid file
reaches the engine.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import scenarios.engine
from scenarios.cli import main
from scenarios.spec import bundled_scenarios, parse_scenario

# An error line is "twincell: error: <file>: <field>: <what is allowed>"; past the file
# name it is at most this long.
MAX_MESSAGE_CHARS = 200
BASE: dict[str, Any] = yaml.safe_load(bundled_scenarios()["tiny"].read_text())


class ReachedEngine(Exception):
    """Raised by the stand-in engine: the file passed every check."""


def _leaf_paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(d, dict):
        out = [prefix] if prefix else []
        for k, v in d.items():
            out += _leaf_paths(v, (*prefix, k))
        return out
    if isinstance(d, list) and d and not isinstance(d[0], dict):
        return [prefix, *((*prefix, i) for i in range(len(d)))]
    if isinstance(d, list) and d:  # a list of mappings (part.families): into each entry
        out = [prefix]
        for i, v in enumerate(d):
            out += _leaf_paths(v, (*prefix, i))
        return out
    return [prefix]


# Every field of the full scenario (defaults included), so mutations reach nested models:
# the tiny scenario resolved, its parts in the part.families form (the short form's keys
# stay, as nulls, so mutating them exercises the "both forms" checks).
FULL: dict[str, Any] = parse_scenario(BASE).model_dump(mode="json")
PATHS = _leaf_paths(FULL)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2, 12.7, 1e9, 1e-9, "96", "1e999", "nan", "", "panda"]),
    st.text(max_size=400),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=6),
    st.dictionaries(st.text(max_size=12), SCALARS, max_size=3),
)


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``data`` with ``value`` at ``path`` (creating mappings on the way)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, list) and isinstance(head, int):
        out_list = list(data)
        if head < len(out_list):
            out_list[head] = _set(out_list[head], rest, value)
        return out_list
    out = dict(data) if isinstance(data, dict) else {}
    out[head] = _set(out.get(head), rest, value)
    return out


# Plausible values: these keep many examples valid, so the valid path is exercised too.
GENTLE = st.one_of(st.integers(0, 4), st.floats(0.0, 1.0), st.sampled_from(["panda", "hole"]))


@st.composite
def mutated_yaml(draw: st.DrawFn, values: st.SearchStrategy[Any] = VALUES) -> str:
    """The tiny scenario with one to three fields replaced or added, as YAML text."""
    data: Any = FULL if draw(st.booleans()) else BASE
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        if draw(st.integers(0, 4)) == 0:  # an unknown field beside a known one
            path = (*path[:-1], draw(st.text(min_size=1, max_size=40)))
        data = _set(data, path, draw(values))
    return yaml.safe_dump(data, allow_unicode=True)


def _nested(depth: int, kind: str) -> str:
    if kind == "flow-list":
        return "name: x\ndescription: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow-map":
        return "name: x\ncell: " + "{a: " * depth + "1" + "}" * depth + "\n"
    return "name: x\ncell:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))


def _anchors(width: int, levels: int) -> str:
    lines = ["name: x", "l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"description: *l{levels - 1}")
    return "\n".join(lines) + "\n"


RAW_TEXT = st.one_of(
    mutated_yaml(),
    mutated_yaml(GENTLE),
    st.builds(_nested, st.integers(1, 1200), st.sampled_from(["flow-list", "flow-map", "block"])),
    st.builds(_anchors, st.integers(2, 12), st.integers(1, 9)),
    st.text(max_size=300),
)
FILES = st.one_of(
    RAW_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=300)
)


def _call(argv: list[str]) -> tuple[int | str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str = main(argv)
        except ReachedEngine:
            code = "engine"
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch working directory; the engine is a sentinel that stops valid runs."""

    def _engine(*args: Any, **kwargs: Any) -> Any:
        raise ReachedEngine

    monkeypatch.setattr(scenarios.engine, "run_scenario", _engine)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(blob=FILES)
def test_any_scenario_file_gives_exit_0_or_one_line_and_exit_2(sandbox: Path, blob: bytes) -> None:
    path = sandbox / "scenario.yaml"
    path.write_bytes(blob)
    before = _listing(sandbox)
    code, out, err = _call(["validate", str(path)])
    event(f"exit {code}")
    assert code in (0, 2), (code, err[-2000:])
    assert "Traceback" not in err
    if code == 2:
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("twincell: error: "), err[:2000]
        message = lines[0].removeprefix("twincell: error: ").removeprefix(f"{path}: ")
        assert len(message) <= MAX_MESSAGE_CHARS, lines[0]
    else:
        assert out.startswith("ok: ") and err == ""
    run_code, _, run_err = _call(["run", str(path), "--out", str(sandbox / "out"), "-q"])
    # The run command checks exactly what validate checks before it starts anything.
    assert run_code == ("engine" if code == 0 else 2), run_err[-2000:]
    assert _listing(sandbox) == before
