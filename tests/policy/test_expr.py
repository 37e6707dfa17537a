"""Policy-value expressions: Python's arithmetic, never Python's eval, errors with a caret."""

from __future__ import annotations

import ast
import copy
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_init import PolicyError
from lightning_init.policy._expr import FUNCTIONS, parse_expression

VALUES = {"n_layer": 12.0, "fan_in": 64.0, "d_model": 768.0, "layer_id": 0.0}

LITERALS = st.sampled_from(["0.0", "1.0", "2.0", "0.5", "3.25", "1e-3", "1e300", "7.0", "8.0"])
NAMES = st.sampled_from(sorted(VALUES))


def _combine(children):
    pair = st.tuples(children, children)
    return st.one_of(
        st.builds(lambda ab, op: f"({ab[0]} {op} {ab[1]})", pair,
                  st.sampled_from(["+", "-", "*", "/", "**"])),
        # unparenthesized, so precedence and associativity are exercised
        st.builds(lambda ab, op: f"{ab[0]} {op} {ab[1]}", pair,
                  st.sampled_from(["+", "-", "*", "/", "**"])),
        st.builds(lambda a: f"-{a}", children),
        st.builds(lambda a, f: f"{f}({a})", children, st.sampled_from(["sqrt", "log", "exp"])),
        st.builds(lambda ab, f: f"{f}({ab[0]}, {ab[1]})", pair, st.sampled_from(["min", "max"])),
    )


EXPRESSIONS = st.recursive(st.one_of(LITERALS, NAMES), _combine, max_leaves=12)


class _Float64Literals(ast.NodeTransformer):
    """Every literal as a numpy float64, whose arithmetic raises on overflow (in ``errstate``)."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.Call(ast.Name("F", ast.Load()), [node], [])


def _python(text: str) -> float | None:
    """Python's own value of ``text`` (trusted, generated here), or None where ours must raise:
    ours refuses any step that overflows or leaves the reals, even when a later ``min`` would
    bring the result back (``min(0, 1e300 * 1e300)``), so the reference does too."""
    tree = ast.fix_missing_locations(_Float64Literals().visit(ast.parse(text, mode="eval")))
    scope = {name: (lambda v, f=function: np.float64(f(v)))
             for name, function in (("sqrt", math.sqrt), ("log", math.log), ("exp", math.exp))}
    scope |= {"min": min, "max": max, "F": np.float64,
              **{name: np.float64(value) for name, value in VALUES.items()}}
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            value = eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}}, scope)
    except (ZeroDivisionError, OverflowError, ValueError, FloatingPointError, TypeError):
        return None
    if isinstance(value, complex) or not math.isfinite(value):
        return None
    return float(value)


@settings(max_examples=400, deadline=None)
@given(EXPRESSIONS)
def test_equals_python_float_arithmetic_bit_for_bit_or_raises(text):
    expected = _python(text)
    expr = parse_expression(text, variables=VALUES)
    if expected is None:
        with pytest.raises(PolicyError, match=r"expression .*column \d+"):
            expr.evaluate(VALUES)
    else:
        assert expr.evaluate(VALUES) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.eE+-*/()^%, _abcdfglnqrstx", max_size=30))
def test_any_text_parses_or_raises_policy_error_only(text):
    try:
        expr = parse_expression(text, variables=["a", "x"])
        expr.evaluate({"a": 2.0, "x": -3.0})
    except PolicyError:
        pass


@pytest.mark.parametrize(("text", "value"), [
    ("-2 ** 2", -4.0), ("2 ** -1", 0.5), ("2 ** 3 ** 2", 512.0), ("2 * 3 + 4", 10.0),
    ("2 + 3 * 4", 14.0), ("8 / 4 / 2", 1.0), ("8 - 4 - 2", 2.0), ("+-+3", -3.0),
    ("min(4, 2, 3)", 2.0), ("max(1)", 1.0), (".5 + 2.", 2.5), ("1e2", 100.0),
])
def test_precedence_and_literals_are_pythons(text, value):
    assert parse_expression(text).evaluate() == value


def test_parse_once_evaluate_many():
    expr = parse_expression("0.02 / sqrt(2 * n_layer)", variables=["n_layer", "d_model"])
    assert expr.names == frozenset({"n_layer"})
    assert [expr.evaluate({"n_layer": n}) for n in (2, 8)] == [0.01, 0.005]
    assert repr(expr) == "Expression('0.02 / sqrt(2 * n_layer)')"


def _caret_column(message: str) -> int:
    caret_line = next(line for line in message.splitlines() if line.strip().startswith("^"))
    return caret_line.index("^") - 4  # the expression is shown indented by four spaces


def test_unknown_variable_names_it_the_column_and_a_suggestion():
    text = "0.02 / sqrt(2 * n_layr)"
    with pytest.raises(PolicyError) as info:
        parse_expression(text, variables=["n_layer", "d_model"])
    message = str(info.value)
    assert f"expression {text!r}, column 17: unknown variable 'n_layr'" in message
    assert "Did you mean 'n_layer'? Known variables: d_model, n_layer." in message
    assert _caret_column(message) == text.index("n_layr")
    assert message.splitlines()[-2].strip() == "^" * len("n_layr")


@pytest.mark.parametrize(("text", "culprit", "words"), [
    ("2 ^ 3", "^", "use ** for a power"),
    ("7 // 2", "//", "use / (division is in floats)"),
    ("(1 + 2", "", "expected ')' to close the '(' at column 1, found the end"),
    ("1 + 2)", ")", "')' has no '(' to close"),
    ("2 3", "3", "unexpected '3' where an operator"),
    ("sqrt", "sqrt", "'sqrt' is a function: write sqrt(...)"),
    ("sqrrt(2)", "sqrrt", "unknown function 'sqrrt'"),
    ("sqrt(1, 2)", "sqrt", "sqrt() takes 1 argument, given 2"),
    ("1 + ", "", "expected a number, a variable or '(', found the end"),
    ("1e999", "1e999", "the number 1e999 is beyond"),
    ("__import__('os')", "'", "unexpected \"'\""),
    ("x.real", ".", "unexpected '.'"),
])
def test_syntax_errors_point_at_the_culprit(text, culprit, words):
    with pytest.raises(PolicyError) as info:
        parse_expression(text)
    message = str(info.value)
    assert words in message
    column = text.index(culprit) if culprit else len(text)
    assert f"column {column + 1}:" in message
    assert _caret_column(message) == column


@pytest.mark.parametrize(("text", "words"), [
    ("10 ** 400", "10 ** 400 overflows"),
    ("2 ** 2 ** 2 ** 2 ** 2", "2 ** 65536 overflows"),
    ("1e308 * 10", "1e+308 * 10 overflows"),
    ("exp(1000)", "exp(1000) is not a finite real number"),
    ("sqrt(0 - 1)", "sqrt(-1) is not a finite real number"),
    ("log(0)", "log(0) is not a finite real number"),
    ("1 / (n - n)", "division by zero in 1 / 0"),
    ("0 ** -1", "division by zero in 0 ** (-1)"),
    ("(0 - 8) ** (1 / 3)", "(-8) ** 0.333333 is not a real number"),
])
def test_overflow_and_domain_errors_are_policy_errors(text, words):
    expr = parse_expression(text)
    with pytest.raises(PolicyError, match=r"column \d+") as info:
        expr.evaluate({"n": 3})
    assert words in str(info.value)


def test_missing_or_non_numeric_value_at_evaluation():
    expr = parse_expression("fan_in * 2")
    with pytest.raises(PolicyError, match=r"no value for 'fan_in'(.|\n)*Values given: d_model\."):
        expr.evaluate({"d_model": 3})
    with pytest.raises(PolicyError, match="variable 'fan_in' is 'wide', not a number"):
        expr.evaluate({"fan_in": "wide"})


def test_nesting_is_bounded_and_long_chains_do_not_recurse():
    for deep in ("(" * 5000 + "1" + ")" * 5000, "-" * 5000 + "1", "2 **" * 500 + "2"):
        with pytest.raises(PolicyError, match="nested more than 64 levels deep"):
            parse_expression(deep[:1999])
    assert parse_expression("+".join(["1"] * 900)).evaluate() == 900.0
    with pytest.raises(PolicyError, match="is 2001 characters long; the limit is 2000"):
        parse_expression("1" * 2001)


def test_pickles_and_copies_by_its_text():
    expr = parse_expression("0.02 / sqrt(2 * n_layer)", variables=["n_layer"])
    for clone in (pickle.loads(pickle.dumps(expr)), copy.deepcopy(expr)):
        assert clone.text == expr.text and clone.names == expr.names
        assert clone.evaluate({"n_layer": 3}) == expr.evaluate({"n_layer": 3})


def test_only_ascii_digits_and_names():
    with pytest.raises(PolicyError, match="column 1: unexpected '\u0661'"):
        parse_expression("\u0661 + 1")


def test_not_a_string():
    with pytest.raises(PolicyError, match="an expression must be a string, got int 3"):
        parse_expression(3)


def test_functions_listed():
    assert FUNCTIONS == ("sqrt", "log", "exp", "min", "max")
    with pytest.raises(PolicyError, match=r"Functions: exp, log, max, min, sqrt\."):
        parse_expression("abs(2)")
