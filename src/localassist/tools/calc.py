"""``calc``: arithmetic on an AST whitelist. The expression is parsed, never evaluated as Python.

Only number literals, + - * / // % **, unary + and -, parentheses, and a short list of math
functions and constants are walked; every other node (names, attributes, calls of anything
else, subscripts, lambdas, comprehensions) is refused before anything is computed. Powers are
sized before they are computed, so ``10**10**10`` is refused at once instead of hanging.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from localassist.tools.base import Safety, Tool, ToolContext, ToolError, ToolResult

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 10_000
MAX_RESULT_BITS = 10_000  # about 3,000 decimal digits; Python refuses str() past 4,300 digits anyway

Number = int | float

FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "log": math.log,  # log(x) is natural; log(x, base)
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate(expression: str) -> Number:
    """The value of an arithmetic ``expression``; ``ToolError`` with a clear message otherwise."""
    text = expression.strip()
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is too long ({len(text):,} characters; at most {MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression}") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large for a floating-point number") from None
    except ValueError as exc:  # math domain errors: sqrt(-1), log(0)
        raise ToolError(f"math error: {exc}") from None
    except (TypeError, RecursionError) as exc:
        raise ToolError(f"cannot compute: {exc}") from None
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large for a floating-point number" if math.isinf(value) else "not a number")
    return value


def format_number(value: Number) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        raise ToolError(f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        value = BINARY[type(node.op)](left, right)
        if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
            raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS:,} bits)")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ToolError(f"not allowed in an arithmetic expression: {_describe(node.func)}")
        if node.func.id not in FUNCTIONS:
            raise ToolError(f"unknown function {node.func.id!r}; functions: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ToolError("functions take positional arguments only")
        args = [_eval(arg) for arg in node.args]
        if node.func.id == "round" and len(args) == 2 and not isinstance(args[1], int):
            raise ToolError("round(x, digits): digits must be a whole number")
        return FUNCTIONS[node.func.id](*args)
    raise ToolError(f"not allowed in an arithmetic expression: {_describe(node)}")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int):
        if exponent > MAX_EXPONENT and abs(base) > 1:
            raise ToolError(f"exponent too large ({exponent:,}; at most {MAX_EXPONENT:,})")
        if exponent > 0 and abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > MAX_RESULT_BITS:
            raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS:,} bits)")
    elif isinstance(exponent, (int, float)) and abs(exponent) > MAX_EXPONENT and abs(base) != 1:
        raise ToolError(f"exponent too large ({exponent:g}; at most {MAX_EXPONENT:,})")


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripts",
        ast.Lambda: "lambdas",
        ast.ListComp: "comprehensions",
        ast.SetComp: "comprehensions",
        ast.DictComp: "comprehensions",
        ast.GeneratorExp: "comprehensions",
        ast.Compare: "comparisons",
        ast.BoolOp: "and/or",
    }
    return names.get(type(node), type(node).__name__)


class CalcTool(Tool):
    name = "calc"
    description = (
        "Evaluate an arithmetic expression exactly. Numbers, + - * / // % ** (or ^), parentheses, "
        "sqrt, log, log10, log2, exp, sin, cos, tan, abs, round, min, max, floor, ceil, pi, e, tau. "
        "Use it for any arithmetic instead of computing in your head."
    )
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "for example: (17 * 3.5) / 2 + sqrt(2)"}},
        "required": ["expression"],
        "additionalProperties": False,
    }
    safety = Safety.SAFE

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult(format_number(evaluate(arguments["expression"])))
