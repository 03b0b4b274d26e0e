"""Logic files: tokenizer and parser, text -> abstract syntax (no evaluation here).

The language is documented in docs/logic.md. Statements are one per line; a statement
continues over several lines while a bracket is open. `#` starts a comment.

    param N = 2
    concept a[i in 0..N-1] : 0..9
    hidden  carry[i in 0..N] : 0..1
    label   s[i in 0..N] : 0..9
    constraint carry[0] == 0
    constraint forall i in 0..N-1: a[i] + b[i] + carry[i] == s[i] + 10 * carry[i+1]

Parsing is a hand-written recursive descent over a token list: nothing is ever passed
to Python's `eval`, and recursion depth is bounded so hostile input fails cleanly.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LogicError

ROLES = ("concept", "label", "hidden")
KEYWORDS = {
    "param", "concept", "label", "hidden", "constraint", "forall", "in", "where",
    "and", "or", "not", "true", "false", "sum", "if", "then", "else", "min", "max", "abs",
}
MAX_NESTING = 48  # brackets, unary operators and if/sum nested deeper are rejected ...
MAX_DEPTH = 200  # ... and so are syntax trees deeper than this (long a + b + ... chains)
# Both keep the recursive parser, grounder and evaluator far from Python's recursion limit.


# ----------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class Node:
    line: int


@dataclass(frozen=True)
class Number(Node):
    value: int


@dataclass(frozen=True)
class Boolean(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    """A parameter, a bound index, or a scalar (unindexed) variable."""
    name: str


@dataclass(frozen=True)
class Indexed(Node):
    name: str
    indices: tuple


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # + - * // % == != < <= > >= and or -> <->
    left: Node
    right: Node


@dataclass(frozen=True)
class IfThenElse(Node):
    condition: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True)
class Call(Node):
    function: str  # min, max, abs
    arguments: tuple


@dataclass(frozen=True)
class Binder:
    """`i in lo..hi`: one bound index of a family or quantifier."""
    name: str
    low: Node
    high: Node


@dataclass(frozen=True)
class Aggregate(Node):
    """`sum(i in 0..N-1 [where cond]: expr)`."""
    function: str
    binders: tuple
    where: Node | None
    body: Node


@dataclass(frozen=True)
class Range:
    low: Node
    high: Node


@dataclass(frozen=True)
class ValueSet:
    values: tuple


@dataclass(frozen=True)
class ParamDecl:
    line: int
    name: str
    value: Node


@dataclass(frozen=True)
class VariableDecl:
    line: int
    role: str
    name: str
    binders: tuple  # () for a scalar variable
    domain: Range | ValueSet


@dataclass(frozen=True)
class ConstraintDecl:
    line: int
    binders: tuple
    where: Node | None
    body: Node
    text: str


@dataclass
class Program:
    path: str
    statements: list = field(default_factory=list)


# ----------------------------------------------------------------------------- tokens
_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<comment>\#[^\n]*)
  | (?P<newline>\n)
  | (?P<number>[0-9]+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><->|->|\.\.|//|==|!=|<=|>=|[-+*%<>=()\[\]{},:])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # number, name, keyword, op, newline, end
    text: str
    line: int
    start: int = 0  # offsets of the lexeme in the source text
    end: int = 0


_CLOSING = {"(": ")", "[": "]", "{": "}"}


def tokenize(text: str, path: str) -> list[Token]:
    tokens: list[Token] = []
    line, position = 1, 0
    open_brackets: list[Token] = []
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise LogicError(f"unexpected character {text[position]!r}", path, line)
        kind, lexeme = match.lastgroup, match.group()
        start, position = position, match.end()
        if kind == "newline":
            # Inside brackets a newline only continues the statement.
            if not open_brackets and tokens and tokens[-1].kind != "newline":
                tokens.append(Token("newline", "\n", line, start, position))
            line += 1
        elif kind == "number":
            if len(lexeme) > 18:
                raise LogicError(f"number {lexeme[:20]}... is too large", path, line)
            tokens.append(Token("number", lexeme, line, start, position))
        elif kind == "name":
            tokens.append(Token("keyword" if lexeme in KEYWORDS else "name", lexeme, line, start, position))
        elif kind == "op":
            token = Token("op", lexeme, line, start, position)
            if lexeme in _CLOSING:
                open_brackets.append(token)
            elif lexeme in ")]}":
                if not open_brackets:
                    raise LogicError(f"{lexeme!r} closes no open bracket", path, line)
                opening = open_brackets.pop()
                if _CLOSING[opening.text] != lexeme:
                    where = "" if opening.line == line else f" on line {opening.line}"
                    raise LogicError(f"{lexeme!r} does not match the {opening.text!r} opened{where}", path, line)
            tokens.append(token)
    if open_brackets:
        opening = open_brackets[-1]
        raise LogicError(f"{opening.text!r} is never closed", path, opening.line)
    if tokens and tokens[-1].kind != "newline":
        tokens.append(Token("newline", "\n", line, len(text), len(text)))
    tokens.append(Token("end", "", line, len(text), len(text)))
    return tokens


# ----------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, tokens: list[Token], path: str, source: str):
        self.tokens = tokens
        self.position = 0
        self.path = path
        self.source = source
        self.depth = 0  # current recursion (nesting) depth of the parser
        self.heights: dict = {}  # id(node) -> (height of the syntax tree below it, node)

    @contextmanager
    def nested(self):
        """One more level of parser recursion (brackets, unary operators, if, sum)."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"expression nested deeper than {MAX_NESTING} levels")
        try:
            yield
        finally:
            self.depth -= 1

    def node(self, node: Node, *children) -> Node:
        """Record a composite node's height; reject trees too deep to evaluate safely."""
        height = 1 + max((self.heights.get(id(c), (1,))[0] for c in children if c is not None), default=1)
        if height > MAX_DEPTH:
            raise LogicError(f"expression is more than {MAX_DEPTH} levels deep; "
                             f"write long sums with sum(...) or split the constraint", self.path, node.line)
        self.heights[id(node)] = (height, node)  # the node is kept so that its id stays unique
        return node

    def source_text(self, first: int, last: int) -> str:
        """The source of tokens[first..last] as written, comments dropped, lines joined by a space."""
        if last < first:
            return ""
        raw = self.source[self.tokens[first].start:self.tokens[last].end]
        lines = (re.sub(r"#[^\n]*", "", part).strip() for part in raw.split("\n"))
        return " ".join(part for part in lines if part)

    # -- helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.position]

    def error(self, message: str, token: Token | None = None) -> LogicError:
        token = token or self.token
        return LogicError(message, self.path, token.line)

    def describe(self, token: Token) -> str:
        if token.kind == "newline":
            return "end of line"
        if token.kind == "end":
            return "end of file"
        return repr(token.text)

    def accept(self, text: str) -> Token | None:
        if self.token.text == text and self.token.kind in ("op", "keyword"):
            token = self.token
            self.position += 1
            return token
        return None

    def expect(self, text: str, context: str) -> Token:
        token = self.accept(text)
        if token is None:
            raise self.error(f"expected {text!r} {context}, found {self.describe(self.token)}")
        return token

    def expect_name(self, context: str) -> Token:
        token = self.token
        if token.kind != "name":
            if token.kind == "keyword":
                raise self.error(f"{token.text!r} is a reserved word and cannot be used as {context}")
            raise self.error(f"expected {context}, found {self.describe(token)}")
        self.position += 1
        return token

    def end_statement(self) -> None:
        if self.token.kind != "newline":
            raise self.error(f"unexpected {self.describe(self.token)} after the end of the statement")
        self.position += 1

    # -- statements
    def program(self) -> Program:
        program = Program(self.path)
        while self.token.kind != "end":
            if self.token.kind == "newline":
                self.position += 1
                continue
            program.statements.append(self.statement())
        return program

    def statement(self):
        token = self.token
        if token.kind == "keyword" and token.text == "param":
            self.position += 1
            name = self.expect_name("a parameter name")
            self.expect("=", "after the parameter name")
            value = self.expression()
            self.end_statement()
            return ParamDecl(token.line, name.text, value)
        if token.kind == "keyword" and token.text in ROLES:
            self.position += 1
            name = self.expect_name("a variable name")
            binders: tuple = ()
            if self.accept("["):
                binders = self.binders(closing="]")
                self.expect("]", "to close the index list")
            self.expect(":", f"and a domain after the variable {name.text}")
            domain = self.domain()
            self.end_statement()
            return VariableDecl(token.line, token.text, name.text, binders, domain)
        if token.kind == "keyword" and token.text == "constraint":
            self.position += 1
            start = self.position
            binders, where = (), None
            if self.accept("forall"):
                binders = self.binders(closing=":")
                if self.accept("where"):
                    where = self.expression()
                self.expect(":", "after the forall binders")
            body = self.expression()
            text = self.source_text(start, self.position - 1)
            self.end_statement()
            return ConstraintDecl(token.line, binders, where, body, text)
        raise self.error(
            f"expected a statement (param, concept, label, hidden or constraint), found {self.describe(token)}"
        )

    def binders(self, closing: str) -> tuple:
        binders = []
        while True:
            name = self.expect_name("an index name")
            self.expect("in", f"after the index {name.text}")
            low = self.expression()
            self.expect("..", f"in the range of {name.text} (write lo..hi)")
            high = self.expression()
            binders.append(Binder(name.text, low, high))
            if not self.accept(","):
                return tuple(binders)

    def domain(self) -> Range | ValueSet:
        if self.accept("{"):
            values = [self.expression()]
            while self.accept(","):
                values.append(self.expression())
            self.expect("}", "to close the value set")
            return ValueSet(tuple(values))
        low = self.expression()
        self.expect("..", "in the domain (write lo..hi or {v1, v2, ...})")
        high = self.expression()
        return Range(low, high)

    # -- expressions, lowest precedence first
    def expression(self) -> Node:
        with self.nested():
            if self.token.kind == "keyword" and self.token.text == "if":
                line = self.token.line
                self.position += 1
                condition = self.expression()
                self.expect("then", "in if ... then ... else ...")
                then = self.expression()
                self.expect("else", "in if ... then ... else ...")
                otherwise = self.expression()
                return self.node(IfThenElse(line, condition, then, otherwise), condition, then, otherwise)
            return self.implication()

    def implication(self) -> Node:
        # Right-associative: a -> b -> c is a -> (b -> c). Parsed iteratively.
        operands, operators = [self.disjunction()], []
        while token := (self.accept("->") or self.accept("<->")):
            operators.append(token)
            operands.append(self.disjunction())
        result = operands.pop()
        while operators:
            token, left = operators.pop(), operands.pop()
            result = self.node(Binary(token.line, token.text, left, result), left, result)
        return result

    def disjunction(self) -> Node:
        left = self.conjunction()
        while token := self.accept("or"):
            right = self.conjunction()
            left = self.node(Binary(token.line, "or", left, right), left, right)
        return left

    def conjunction(self) -> Node:
        left = self.negation()
        while token := self.accept("and"):
            right = self.negation()
            left = self.node(Binary(token.line, "and", left, right), left, right)
        return left

    def negation(self) -> Node:
        if token := self.accept("not"):
            with self.nested():
                operand = self.negation()
                return self.node(Unary(token.line, "not", operand), operand)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if token := self.accept(op):
                right = self.additive()
                node = self.node(Binary(token.line, op, left, right), left, right)
                if self.token.kind == "op" and self.token.text in ("==", "!=", "<=", ">=", "<", ">"):
                    raise self.error("comparisons cannot be chained; combine them with 'and'")
                if self.token.kind == "op" and self.token.text == "=":
                    raise self.error("use '==' to compare ('=' only appears in param declarations)")
                return node
        if self.token.text == "=" and self.token.kind == "op":
            raise self.error("use '==' to compare ('=' only appears in param declarations)")
        return left

    def additive(self) -> Node:
        left = self.multiplicative()
        while True:
            token = self.accept("+") or self.accept("-")
            if not token:
                return left
            right = self.multiplicative()
            left = self.node(Binary(token.line, token.text, left, right), left, right)

    def multiplicative(self) -> Node:
        left = self.unary()
        while True:
            token = self.accept("*") or self.accept("//") or self.accept("%")
            if not token:
                return left
            right = self.unary()
            left = self.node(Binary(token.line, token.text, left, right), left, right)

    def unary(self) -> Node:
        if token := self.accept("-"):
            with self.nested():
                operand = self.unary()
                return self.node(Unary(token.line, "-", operand), operand)
        return self.atom()

    def atom(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.position += 1
            return Number(token.line, int(token.text))
        if token.kind == "keyword" and token.text in ("true", "false"):
            self.position += 1
            return Boolean(token.line, token.text == "true")
        if token.kind == "keyword" and token.text == "sum":
            self.position += 1
            self.expect("(", "after sum")
            binders = self.binders(closing=":")
            where = self.expression() if self.accept("where") else None
            self.expect(":", "after the binders of sum")
            body = self.expression()
            self.expect(")", "to close sum(...)")
            children = [where, body] + [n for b in binders for n in (b.low, b.high)]
            return self.node(Aggregate(token.line, "sum", binders, where, body), *children)
        if token.kind == "keyword" and token.text in ("min", "max", "abs"):
            self.position += 1
            self.expect("(", f"after {token.text}")
            arguments = [self.expression()]
            while self.accept(","):
                arguments.append(self.expression())
            self.expect(")", f"to close {token.text}(...)")
            if token.text == "abs" and len(arguments) != 1:
                raise self.error("abs takes exactly one argument", token)
            return self.node(Call(token.line, token.text, tuple(arguments)), *arguments)
        if token.kind == "name":
            self.position += 1
            if self.accept("["):
                indices = [self.expression()]
                while self.accept(","):
                    indices.append(self.expression())
                self.expect("]", f"to close the index of {token.text}")
                return self.node(Indexed(token.line, token.text, tuple(indices)), *indices)
            return Name(token.line, token.text)
        if self.accept("("):
            inner = self.expression()
            self.expect(")", "to close the parenthesis")
            return inner
        if token.kind == "keyword" and token.text == "if":
            raise self.error("inside a larger expression, write (if ... then ... else ...) in parentheses")
        if token.kind == "keyword" and token.text == "not":
            raise self.error("inside a comparison or arithmetic, write (not ...) in parentheses")
        if token.kind == "keyword":
            raise self.error(f"unexpected keyword {token.text!r} in an expression")
        if token.kind == "op" and token.text == "=":
            raise self.error("unexpected '=' ('==' compares; '=' only appears in param declarations)")
        raise self.error(f"expected a value, a variable or '(' but found {self.describe(token)}")


def parse(text: str, path: str = "<string>") -> Program:
    """Parse a logic file's text. Raises LogicError(`path:line: message`)."""
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark some editors write
    tokens = tokenize(text, path)
    parser = _Parser(tokens, path, text)
    try:
        return parser.program()
    except RecursionError:  # only when called with little stack left: the limits above apply first
        raise LogicError("the file is nested too deeply to parse", path, parser.token.line) from None


def parse_expression(text: str, path: str = "<string>") -> Node:
    """Parse one expression (used for constraints written inside task files)."""
    tokens = [t for t in tokenize(text, path) if t.kind != "newline"]
    tokens.insert(len(tokens) - 1, Token("newline", "\n", tokens[-1].line, len(text), len(text)))
    parser = _Parser(tokens, path, text)
    node = parser.expression()
    parser.end_statement()
    return node


# ----------------------------------------------------------------------------- reading a logic file
MAX_LOGIC_FILE_BYTES = 1 << 20  # parsing and grounding take seconds per 100 KB of constraints


def read_logic_file(path: str | Path) -> str:
    """The text of a logic file; a missing, unreadable or oversized file raises LogicError(`path: message`).

    The size is checked before anything is read, and the read itself stops one byte past
    the limit: a file that grows meanwhile, or a device such as /dev/zero, is refused too.
    """
    path = str(path)
    too_large = (f"the logic file is larger than {MAX_LOGIC_FILE_BYTES} bytes (the limit "
                 f"nesy_gedi.logic.syntax.MAX_LOGIC_FILE_BYTES); split it or generate smaller tables")
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size > MAX_LOGIC_FILE_BYTES:
                raise LogicError(too_large, path)
            data = file.read(MAX_LOGIC_FILE_BYTES + 1)
    except FileNotFoundError:
        raise LogicError("logic file not found", path) from None
    except IsADirectoryError:
        raise LogicError("is a directory, not a logic file", path) from None
    except OSError as error:
        raise LogicError(f"cannot read the logic file: {error.strerror or error}", path) from None
    if len(data) > MAX_LOGIC_FILE_BYTES:
        raise LogicError(too_large, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LogicError("logic file is not UTF-8 text", path) from None
