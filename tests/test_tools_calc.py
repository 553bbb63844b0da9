"""calc: exact arithmetic on an AST whitelist; everything that is not arithmetic is refused before it runs."""

from __future__ import annotations

import time

import pytest

from localassist.tools import ToolContext, run_tool
from localassist.tools.calc import CalcTool


def calc(expression: str):
    return run_tool(CalcTool(), {"expression": expression}, ToolContext())


# Each value worked out by hand, not by Python.
HAND_COMPUTED = [
    ("17 * 23", "391"),
    ("2 + 3 * 4", "14"),
    ("(2 + 3) * 4", "20"),
    ("7 / 2", "3.5"),
    ("7 // 2", "3"),
    ("-7 // 2", "-4"),
    ("-7 % 3", "2"),
    ("2 ** 10", "1024"),
    ("2 ^ 8", "256"),
    ("2 ** -2", "0.25"),
    ("-2 ** 2", "-4"),
    ("2 ** 100", "1267650600228229401496703205376"),
    ("sqrt(144) + abs(-3)", "15"),
    ("floor(-1.5)", "-2"),
    ("ceil(-1.5)", "-1"),
    ("min(3, 1, 2) + max(3, 1, 2)", "4"),
    ("round(3.14159, 2)", "3.14"),
    ("cos(0) + sin(0)", "1"),
    ("1.5e3 + 1", "1501"),
    ("((1 + 2) * (3 + 4)) % 5", "1"),
]


@pytest.mark.parametrize(("expression", "expected"), HAND_COMPUTED)
def test_calc_matches_hand_computed_values(expression, expected):
    result = calc(expression)
    assert not result.is_error, result.content
    assert result.content == expected


def test_calc_functions_and_constants_are_close_to_hand_values():
    assert float(calc("pi").content) == pytest.approx(3.14159265, abs=1e-8)
    assert float(calc("e").content) == pytest.approx(2.71828183, abs=1e-8)
    assert float(calc("log(1000, 10)").content) == pytest.approx(3)
    assert float(calc("sin(pi / 6)").content) == pytest.approx(0.5)
    assert float(calc("sqrt(2)").content) == pytest.approx(1.41421356, abs=1e-8)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('__import__("os")', "unknown function '__import__'"),
        ('__import__("os").system("touch pwned")', "attribute access"),
        ("(1).__class__", "attribute access"),
        ("().__class__.__bases__[0]", "not allowed in an arithmetic expression"),
        ("[1, 2][0]", "subscripts"),
        ("(lambda: 1)()", "lambdas"),
        ("[x for x in (1, 2)]", "comprehensions"),
        ("open", "unknown name 'open'"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "only numbers"),
        ("1 < 2", "comparisons"),
        ("eval('1')", "unknown function 'eval'"),
    ],
)
def test_calc_refuses_everything_that_is_not_arithmetic(expression, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = calc(expression)
    assert result.is_error
    assert message in result.content
    assert not (tmp_path / "pwned").exists()


def test_calc_refuses_huge_powers_before_computing_them():
    started = time.monotonic()
    for expression in ("10**10**10", "9**9**9", "2**100000", "(10**1000)**100"):
        result = calc(expression)
        assert result.is_error
        assert "too large" in result.content
    assert time.monotonic() - started < 2


def test_calc_reports_math_errors_clearly():
    assert calc("1 / 0").content == "calc: division by zero"
    assert calc("5 % 0").content == "calc: division by zero"
    assert "math error" in calc("sqrt(-1)").content
    assert "not a real number" in calc("(-8) ** 0.5").content
    assert "too large for a floating-point number" in calc("1e308 * 10").content
    assert "not an arithmetic expression" in calc("2 +").content


def test_calc_refuses_overlong_input():
    result = calc("1+" * 300 + "1")
    assert result.is_error
    assert "too long" in result.content
