"""The package's shape rules: no function over MAX_LINES lines or MAX_PARAMS parameters (settings
travel together in one object; a longer function splits into named steps)."""

from __future__ import annotations

import ast
from pathlib import Path

import neuronscope

MAX_LINES, MAX_PARAMS = 60, 6
PACKAGE = Path(neuronscope.__file__).parent


def _functions(source: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    named = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return len([n for n in named if n not in ("self", "cls")]) + (a.vararg is not None) + (a.kwarg is not None)


def _offenders() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for fn in _functions(path.read_text()):
            lines, params = fn.end_lineno - fn.lineno + 1, _params(fn)
            if lines > MAX_LINES or params > MAX_PARAMS:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{fn.lineno} {fn.name}: {lines} lines, {params} params")
    return out


def test_no_function_is_too_long_or_takes_too_many_parameters():
    assert _offenders() == []


def test_the_rule_sees_a_long_function_and_a_wide_one():
    wide = "def f(a, b, c, d, e, f, g):\n    return a\n"
    long = "def g():\n" + "    x = 1\n" * MAX_LINES
    method = "class C:\n    def m(self, a, b, c, d, e, f):\n        return a\n"
    assert [_params(fn) for fn in _functions(wide)] == [7]
    assert [fn.end_lineno - fn.lineno + 1 for fn in _functions(long)] == [MAX_LINES + 1]
    assert [_params(fn) for fn in _functions(method)] == [6]
