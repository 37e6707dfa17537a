"""Arithmetic expressions for policy values: ``std: "0.02 / sqrt(2 * n_layer)"``.

The grammar is small and closed: numbers, variables, ``+ - * / **``, unary minus and plus,
parentheses and the functions ``sqrt``, ``log`` (natural), ``exp``, ``min`` and ``max``::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := ("-" | "+") unary | power
    power := atom ("**" unary)?          # right-associative; -2**2 is -4, 2**-1 is 0.5
    atom  := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Precedence and associativity are Python's, so an expression means what it would in Python.

It is parsed by a tokenizer and a recursive-descent parser written here, never by ``eval``.
Python's ``ast`` module restricted to a whitelist was the alternative; it was not taken
because its grammar is Python's, not ours: ``2 ^ 3`` would parse (as XOR) and have to be
rejected after the fact, attribute and subscript nodes change between Python versions, error
positions would be Python's ``SyntaxError`` wording rather than one in the policy's words,
and ``ast.parse`` itself recurses in C on deeply nested input. Here every token carries its
column, so each error shows the expression with a caret under the culprit, and nesting is
bounded before any recursion limit is near.

An expression is parsed once (when the policy loads: syntax, unknown variables and function
arity are reported then) and evaluated many times with a mapping of variable values. All
arithmetic is in floats; a result that overflows or is not a real number is an error that
names the operation, never an ``inf``, a ``nan`` or a complex number.

Example:
    >>> expr = parse_expression("0.02 / sqrt(2 * n_layer)", variables=["n_layer"])
    >>> round(expr.evaluate({"n_layer": 12}), 6)
    0.004082
    >>> sorted(expr.names)
    ['n_layer']
    >>> parse_expression("min(1, 2 ** -1) + max(3, 4)").evaluate()
    4.5
    >>> parse_expression("0.02/sqrt(n_layr)", variables=["n_layer"])
    Traceback (most recent call last):
    ...
    lightning_init.PolicyError: expression '0.02/sqrt(n_layr)', column 11: unknown variable 'n_layr'
        0.02/sqrt(n_layr)
                  ^^^^^^
    Did you mean 'n_layer'? Known variables: n_layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning_init._text import did_you_mean, format_choices
from lightning_init.errors import PolicyError

__all__ = ["FUNCTIONS", "Expression", "parse_expression"]

# name -> (implementation, fewest arguments, most arguments or None for any number)
_FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 1),
    "exp": (math.exp, 1, 1),
    "min": (lambda *args: min(args), 1, None),
    "max": (lambda *args: max(args), 1, None),
}
#: The function names an expression may call.
FUNCTIONS: tuple[str, ...] = tuple(_FUNCTIONS)

_MAX_DEPTH = 64  # nesting of parentheses, calls, unary signs and powers
_MAX_LENGTH = 2000
_LARGEST = 1.7976931348623157e308  # the largest finite float

_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/(),])",
    re.ASCII,
)
_NOT_OURS = {"^": "use ** for a power", "//": "use / (division is in floats)",
             "%": "there is no remainder operator", "=": "an expression has no assignment"}


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "op" or "end"
    text: str
    start: int  # 0-based column


def _caret(text: str, start: int, end: int) -> str:
    return f"    {text}\n    {' ' * start}{'^' * max(1, end - start)}"


def _error(text: str, start: int, end: int, message: str, hint: str = "") -> PolicyError:
    """The message: the expression and column, the problem, a caret under it, then a hint."""
    hint = hint.strip()
    return PolicyError(f"expression {text!r}, column {start + 1}: {message}\n"
                       f"{_caret(text, start, end)}" + (f"\n{hint}" if hint else ""))


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = None if text[pos:pos + 2] == "//" else _TOKEN.match(text, pos)
        if match is None:
            bad = "//" if text[pos:pos + 2] == "//" else text[pos]
            hint = _NOT_OURS.get(bad, "expected a number, a name, an operator + - * / ** "
                                      "or a parenthesis")
            raise _error(text, pos, pos + len(bad), f"unexpected {bad!r}: {hint}")
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup or "", match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


# A compiled node: evaluates given the variable values.
_Node = Callable[[Mapping[str, float]], float]


class _Parser:
    """Recursive descent over the token list; builds closures, one per node."""

    def __init__(self, text: str, known: frozenset[str] | None) -> None:
        self.text = text
        self.known = known
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.names: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def _take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def _fail(self, token: _Token, message: str, hint: str = "") -> PolicyError:
        return _error(self.text, token.start, token.start + len(token.text), message, hint)

    def _nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self._fail(token, f"nested more than {_MAX_DEPTH} levels deep")

    def _expect(self, text: str, opened: _Token) -> None:
        if self.tok.text != text:
            found = "the end" if self.tok.kind == "end" else repr(self.tok.text)
            raise self._fail(self.tok, f"expected {text!r} to close the {opened.text!r} at "
                                       f"column {opened.start + 1}, found {found}")
        self._take()

    # -- grammar ------------------------------------------------------------------------------
    def parse(self) -> _Node:
        if self.tok.kind == "end":
            raise _error(self.text, 0, len(self.text), "the expression is empty")
        node = self._sum()
        if self.tok.kind != "end":
            what = "')' has no '(' to close" if self.tok.text == ")" else \
                f"unexpected {self.tok.text!r} where an operator + - * / ** or the end was expected"
            raise self._fail(self.tok, what)
        return node

    def _sum(self) -> _Node:
        return self._chain(self._product, ("+", "-"))

    def _product(self) -> _Node:
        return self._chain(self._unary, ("*", "/"))

    def _chain(self, operand: Callable[[], _Node], ops: tuple[str, ...]) -> _Node:
        """A left-associative chain, evaluated in a loop (no recursion per operator)."""
        first = operand()
        rest: list[tuple[Callable[[float, float], float], _Node]] = []
        while self.tok.kind == "op" and self.tok.text in ops:
            token = self._take()
            rest.append((self._binary(token), operand()))
        if not rest:
            return first

        def chain(values: Mapping[str, float]) -> float:
            result = first(values)
            for apply, node in rest:
                result = apply(result, node(values))
            return result

        return chain

    def _unary(self) -> _Node:
        if self.tok.kind == "op" and self.tok.text in ("-", "+"):
            token = self._take()
            self._nest(token)
            inner = self._unary()
            self.depth -= 1
            if token.text == "+":
                return inner
            return lambda values: -inner(values)
        return self._power()

    def _power(self) -> _Node:
        base = self._atom()
        if not (self.tok.kind == "op" and self.tok.text == "**"):
            return base
        token = self._take()
        self._nest(token)
        exponent = self._unary()
        self.depth -= 1
        apply = self._binary(token)
        return lambda values: apply(base(values), exponent(values))

    def _atom(self) -> _Node:
        token = self.tok
        if token.kind == "number":
            self._take()
            value = float(token.text)
            if not math.isfinite(value):
                raise self._fail(token, f"the number {token.text} is beyond {_LARGEST:g}")
            return lambda values: value
        if token.kind == "name":
            self._take()
            if self.tok.text == "(":
                return self._call(token)
            return self._variable(token)
        if token.text == "(":
            self._take()
            self._nest(token)
            node = self._sum()
            self._expect(")", token)
            self.depth -= 1
            return node
        found = "the end" if token.kind == "end" else repr(token.text)
        raise self._fail(token, f"expected a number, a variable or '(', found {found}")

    def _variable(self, token: _Token) -> _Node:
        name = token.text
        if name in _FUNCTIONS:
            raise self._fail(token, f"{name!r} is a function: write {name}(...)")
        if self.known is not None and name not in self.known:
            listing = format_choices(self.known) if self.known else "none declared"
            raise self._fail(token, f"unknown variable {name!r}",
                             f"{did_you_mean(name, self.known)} Known variables: {listing}.")
        self.names.add(name)
        text = self.text

        def variable(values: Mapping[str, float]) -> float:
            try:
                value = values[name]
            except KeyError:
                given = format_choices(values) if values else "none"
                raise _error(text, token.start, token.start + len(name),
                             f"no value for {name!r}", f"Values given: {given}.") from None
            try:
                return float(value)
            except (TypeError, ValueError):
                raise _error(text, token.start, token.start + len(name),
                             f"variable {name!r} is {value!r}, not a number") from None

        return variable

    def _call(self, token: _Token) -> _Node:
        name = token.text
        if name not in _FUNCTIONS:
            raise self._fail(token, f"unknown function {name!r}",
                             f"{did_you_mean(name, FUNCTIONS)} Functions: "
                             f"{format_choices(FUNCTIONS)}.")
        opened = self._take()
        self._nest(opened)
        args = [self._sum()]
        while self.tok.text == ",":
            self._take()
            args.append(self._sum())
        self._expect(")", opened)
        self.depth -= 1
        func, fewest, most = _FUNCTIONS[name]
        if len(args) < fewest or (most is not None and len(args) > most):
            wanted = f"{fewest}" if most == fewest else f"at least {fewest}"
            raise self._fail(token, f"{name}() takes {wanted} argument"
                                    f"{'' if wanted == '1' else 's'}, given {len(args)}")
        text = self.text

        def call(values: Mapping[str, float]) -> float:
            numbers = [arg(values) for arg in args]
            try:
                result = func(*numbers)
            except (ValueError, OverflowError):
                shown = ", ".join(f"{n:g}" for n in numbers)
                raise _error(text, token.start, token.start + len(name),
                             f"{name}({shown}) is not a finite real number") from None
            return _finite(result, text, token, f"{name}(...)")

        return call

    def _binary(self, token: _Token) -> Callable[[float, float], float]:
        text, op = self.text, token.text

        def apply(a: float, b: float) -> float:
            try:
                result = _OPS[op](a, b)
            except ZeroDivisionError:
                raise _error(text, token.start, token.start + len(op),
                             f"division by zero in {_num(a)} {op} {_num(b)}") from None
            except OverflowError:
                result = math.inf
            if isinstance(result, complex):
                raise _error(text, token.start, token.start + len(op),
                             f"{_num(a)} ** {_num(b)} is not a real number (a negative base "
                             f"needs a whole exponent)")
            return _finite(result, text, token, f"{_num(a)} {op} {_num(b)}")

        return apply


_OPS: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a ** b,
}


def _num(value: float) -> str:
    """A number as it reads in an expression: ``(-8)``, ``0.333333``, ``1e+308``."""
    return f"({value:g})" if value < 0 else f"{value:g}"


def _finite(result: float, text: str, token: _Token, what: str) -> float:
    if math.isfinite(result):
        return result
    raise _error(text, token.start, token.start + len(token.text),
                 f"{what} overflows (the result is beyond {_LARGEST:g})" if not math.isnan(result)
                 else f"{what} is not a number")


@dataclass(frozen=True, eq=False)
class Expression:
    """A parsed expression: evaluate it with a mapping of variable values.

    Attributes:
        text: the expression as written.
        names: the variables it uses.

    Example:
        >>> expr = parse_expression("gain/sqrt(fan_in)")
        >>> sorted(expr.names), expr.evaluate({"gain": 2.0, "fan_in": 16})
        (['fan_in', 'gain'], 0.5)
        >>> expr.evaluate({"gain": 2.0})
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: expression 'gain/sqrt(fan_in)', column 11: no value for 'fan_in'
            gain/sqrt(fan_in)
                      ^^^^^^
        Values given: gain.
    """

    text: str
    names: frozenset[str]
    _node: _Node

    def evaluate(self, values: Mapping[str, float] | None = None) -> float:
        """The value for ``values`` (variable name to number).

        Raises:
            PolicyError: a variable without a value, a division by zero, a result that
                overflows or is not a real number; the message shows where.
        """
        return self._node(values or {})

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # The compiled closures do not pickle; the text re-parses to the same expression.
        return parse_expression, (self.text,)


def parse_expression(text: str, *, variables: Iterable[str] | None = None) -> Expression:
    """Parse ``text`` once; evaluate the result many times.

    Args:
        text: the expression, e.g. ``"0.02 / sqrt(2 * n_layer)"``.
        variables: the names it may use; ``None`` accepts any name (checked at evaluation).

    Raises:
        PolicyError: a syntax error, an unknown variable or function, a wrong number of
            arguments or nesting past 64 levels; the message quotes the expression, gives the
            column and shows it with a caret.

    Example:
        >>> parse_expression("-2 ** 2").evaluate(), parse_expression("2 ** -1").evaluate()
        (-4.0, 0.5)
        >>> parse_expression("2 ^ 3")
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: expression '2 ^ 3', column 3: unexpected '^': use ** for a power
            2 ^ 3
              ^
        >>> parse_expression("10 ** 400").evaluate()
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: expression '10 ** 400', column 4: 10 ** 400 overflows ...
            10 ** 400
               ^^
    """
    if not isinstance(text, str):
        raise PolicyError(f"an expression must be a string, got {type(text).__name__} "
                          f"{text!r}")
    if len(text) > _MAX_LENGTH:
        raise PolicyError(f"expression {text[:40]!r}... is {len(text)} characters long; "
                          f"the limit is {_MAX_LENGTH}")
    known = None if variables is None else frozenset(variables)
    parser = _Parser(text, known)
    node = parser.parse()
    return Expression(text, frozenset(parser.names), node)
