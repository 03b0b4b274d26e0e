"""Grounding: a parsed program + parameter values -> finite categorical knowledge.

Parameters are substituted, families are expanded into one variable per index tuple,
`forall` constraints into one ground constraint per binding, and every ground
constraint is turned into the table of value tuples it allows over its own (small)
scope by vectorised numpy evaluation. The joint space is never enumerated.
"""
from __future__ import annotations

import math
import operator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LogicError
from . import syntax as ast
from .syntax import read_logic_file

# Limits: every one of them turns a runaway file into a clear LogicError instead of a hang.
MAX_DOMAIN_SIZE = 10_000  # values of one variable
MAX_SCOPE_ASSIGNMENTS = 4_000_000  # joint assignments of one ground constraint's scope
MAX_TOTAL_ASSIGNMENTS = 50_000_000  # ... added over all ground constraints
MAX_GROUND_CONSTRAINTS = 100_000  # ground instances of constraints (forall bindings), kept or not
MAX_FAMILY_SIZE = 100_000  # members of one family, values of one index range
MAX_VARIABLES = 100_000  # ground variables in all
MAX_BINDINGS = 1_000_000  # index bindings enumerated by families, forall, sum and where, in all
_SAFE_INTEGER = 2**53  # integers are exact in int64 and float64 below this


@dataclass(frozen=True)
class Variable:
    id: int
    name: str  # e.g. "a[0]"
    family: str
    index: tuple
    role: str  # concept | label | hidden
    domain: tuple  # sorted distinct ints
    line: int

    def position(self, value: int) -> int:
        return self.domain.index(value)


@dataclass
class Constraint:
    line: int
    text: str
    scope: tuple  # variable ids, in order of first mention
    allowed: np.ndarray  # [k, len(scope)] allowed domain *positions*


@dataclass
class Knowledge:
    """Ground categorical knowledge: variables in declaration order and constraint tables."""

    path: str
    params: dict
    variables: list = field(default_factory=list)
    constraints: list = field(default_factory=list)

    def role(self, role: str) -> list:
        return [v for v in self.variables if v.role == role]

    @property
    def concepts(self) -> list:
        return self.role("concept")

    @property
    def labels(self) -> list:
        return self.role("label")

    @property
    def hidden(self) -> list:
        return self.role("hidden")

    def variable(self, name: str) -> Variable:
        for variable in self.variables:
            if variable.name == name:
                return variable
        raise KeyError(name)


# ----------------------------------------------------------------------------- ground expressions
# A ground expression is a small tree with parameters and indices substituted and
# constants folded:
#   Ground("const", type, value)            Ground("var", "int", variable_id)
#   Ground("op", type, op, children)        Ground("if", type, None, (condition, then, otherwise))
# `type` is "int" or "bool". The op "sum" is n-ary, so sum(...) over many terms stays shallow.

@dataclass(frozen=True)
class Ground:
    kind: str
    type: str
    value: object = None
    children: tuple = ()
    line: int = 0


def _const(value, line) -> Ground:
    if isinstance(value, (bool, np.bool_)):
        return Ground("const", "bool", bool(value), (), line)
    return Ground("const", "int", int(value), (), line)


@dataclass
class _Family:
    """A declared variable family (or scalar variable) as the grounder resolves names."""
    name: str
    line: int
    arity: int  # number of indices; 0 for a scalar variable
    members: dict  # index tuple -> Variable

    def describe(self) -> str:
        if self.arity == 0:
            return f"{self.name} is a single variable"
        if not self.members:
            return f"{self.name} has no members"
        indices = list(self.members)
        ranges = ", ".join(f"{min(i[k] for i in indices)}..{max(i[k] for i in indices)}"
                           for k in range(self.arity))
        return f"{self.name} has indices {ranges}"


def _families_of(knowledge: Knowledge) -> dict:
    families: dict = {}
    for variable in knowledge.variables:
        family = families.setdefault(variable.family,
                                     _Family(variable.family, variable.line, len(variable.index), {}))
        family.members[variable.index] = variable
    return families


class _Grounder:
    def __init__(self, path: str, params: dict | None = None, families: dict | None = None):
        self.path = path
        self.params: dict = dict(params or {})
        self.families: dict = dict(families or {})  # name -> _Family
        self.bindings_used = 0
        self.assignments_used = 0
        self.instances_used = 0

    def error(self, message: str, line: int | None) -> LogicError:
        return LogicError(message, self.path, line)

    # The two arithmetic errors, raised both by constant folding and by table evaluation.
    def division_by_zero(self, op: str, line: int) -> LogicError:
        return self.error(f"division by zero: the right side of '{op}' can be 0", line)

    def overflow(self, line: int) -> LogicError:
        return self.error("integer overflow: a value exceeds 2**53", line)

    # -- declarations
    def run(self, program: ast.Program, overrides: dict) -> Knowledge:
        knowledge = Knowledge(self.path, self.params)
        declared_params = [s.name for s in program.statements if isinstance(s, ast.ParamDecl)]
        for name in overrides:
            if name not in declared_params:
                known = ", ".join(declared_params) or "none"
                raise LogicError(f"unknown parameter {name!r} (the file declares: {known})", self.path)
        for statement in program.statements:
            with self.statement(statement.line):
                if isinstance(statement, ast.ParamDecl):
                    self.declare_param(statement, overrides)
                elif isinstance(statement, ast.VariableDecl):
                    self.declare_variables(statement, knowledge)
        if not knowledge.concepts:
            raise LogicError("the file declares no concept (the variables that the network predicts, "
                             "one per input image, are declared with `concept`)", self.path)
        for statement in program.statements:
            if isinstance(statement, ast.ConstraintDecl):
                with self.statement(statement.line):
                    self.ground_constraint(statement, knowledge)
        return knowledge

    @contextmanager
    def statement(self, line: int):
        try:
            yield
        except RecursionError:
            raise self.error("this statement is nested too deeply to evaluate", line) from None

    def declare_param(self, decl: ast.ParamDecl, overrides: dict) -> None:
        if decl.name in self.params:
            raise self.error(f"parameter {decl.name!r} is declared twice", decl.line)
        if decl.name in self.families:
            raise self.error(f"{decl.name!r} is already a variable", decl.line)
        if decl.name in overrides:
            value = overrides[decl.name]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise self.error(f"parameter {decl.name!r} must be an integer, got {value!r}", decl.line)
            value = int(value)
            if abs(value) > _SAFE_INTEGER:
                raise self.error(f"parameter {decl.name!r} = {value} is too large (at most 2**53)", decl.line)
        else:
            value = self.constant(decl.value, {}, "int", f"the value of {decl.name}")
        self.params[decl.name] = value

    def declare_variables(self, decl: ast.VariableDecl, knowledge: Knowledge) -> None:
        if decl.name in self.families:
            first = self.families[decl.name].line
            raise self.error(f"variable {decl.name!r} is already declared on line {first}", decl.line)
        if decl.name in self.params:
            raise self.error(f"{decl.name!r} is already a parameter", decl.line)
        family = _Family(decl.name, decl.line, len(decl.binders), {})
        for env in self.bindings(decl.binders, None, {}, decl.line, f"the family {decl.name}"):
            index = tuple(env[b.name] for b in decl.binders)
            domain = self.domain(decl, env)
            name = decl.name + (f"[{', '.join(map(str, index))}]" if decl.binders else "")
            variable = Variable(len(knowledge.variables), name, decl.name, index, decl.role, domain, decl.line)
            family.members[index] = variable
            knowledge.variables.append(variable)
            if len(family.members) > MAX_FAMILY_SIZE:
                raise self.error(f"family {decl.name} has more than {MAX_FAMILY_SIZE} members", decl.line)
            if len(knowledge.variables) > MAX_VARIABLES:
                raise self.error(f"the file declares more than {MAX_VARIABLES} variables", decl.line)
        self.families[decl.name] = family

    def domain(self, decl: ast.VariableDecl, env: dict) -> tuple:
        what = f"the domain of {decl.name}"
        if isinstance(decl.domain, ast.Range):
            low = self.constant(decl.domain.low, env, "int", what)
            high = self.constant(decl.domain.high, env, "int", what)
            if high < low:
                raise self.error(f"{what} {low}..{high} is empty", decl.line)
            if high - low + 1 > MAX_DOMAIN_SIZE:
                raise self.error(f"{what} has {high - low + 1} values (at most {MAX_DOMAIN_SIZE})", decl.line)
            values = tuple(range(low, high + 1))
        else:
            if len(decl.domain.values) > MAX_DOMAIN_SIZE:
                raise self.error(f"{what} has more than {MAX_DOMAIN_SIZE} values", decl.line)
            values = tuple(self.constant(v, env, "int", what) for v in decl.domain.values)
            if len(set(values)) != len(values):
                raise self.error(f"{what} lists a value twice", decl.line)
            values = tuple(sorted(values))
        if len(values) < 2:
            raise self.error(f"{what} has a single value; declare a parameter instead", decl.line)
        if decl.role == "label" and values[0] < 0:
            raise self.error(f"{what} contains negative values, but a negative label value means "
                             f"'not observed'; shift the label (e.g. d + 9 in 0..18)", decl.line)
        return values

    def bindings(self, binders: tuple, where, env: dict, line: int, what: str):
        """All environments for `i in lo..hi, j in lo2..hi2 [where cond]` (later ranges may use earlier indices)."""
        if not binders:
            if where is None or self.constant(where, env, "bool", "the where-condition"):
                yield dict(env)
            return
        first, rest = binders[0], binders[1:]
        if first.name in self.params or first.name in self.families or first.name in env:
            raise self.error(f"index {first.name!r} shadows a parameter, variable or outer index", line)
        low = self.constant(first.low, env, "int", f"the range of {first.name}")
        high = self.constant(first.high, env, "int", f"the range of {first.name}")
        if high - low + 1 > MAX_FAMILY_SIZE:
            raise self.error(f"the range {low}..{high} of {first.name} in {what} has {high - low + 1} values "
                             f"(at most {MAX_FAMILY_SIZE})", line)
        for value in range(low, high + 1):
            self.bindings_used += 1
            if self.bindings_used > MAX_BINDINGS:
                raise self.error(f"grounding enumerates more than {MAX_BINDINGS} index bindings (families, "
                                 f"forall, sum and where together); make the ranges smaller", line)
            yield from self.bindings(rest, where, {**env, first.name: value}, line, what)

    # -- constraints
    def ground_constraint(self, decl: ast.ConstraintDecl, knowledge: Knowledge) -> None:
        for env in self.bindings(decl.binders, decl.where, {}, decl.line, "the constraint"):
            self.instances_used += 1
            if self.instances_used > MAX_GROUND_CONSTRAINTS:
                raise self.error(f"more than {MAX_GROUND_CONSTRAINTS} ground constraints (forall instances "
                                 f"in all); make the ranges smaller", decl.line)
            expression = self.ground(decl.body, env)
            if expression.type != "bool":
                raise self.error("a constraint must be a condition (a comparison or a boolean), "
                                 "not an integer expression", decl.line)
            at = "".join(f", {b.name} = {env[b.name]}" for b in decl.binders)
            at = f" (for {at[2:]})" if at else ""
            scope = _scope(expression)
            if not scope:
                if not expression.value:
                    raise self.error(f"constraint is false{at}: {decl.text}", decl.line)
                continue  # a tautology after substitution: nothing to compile
            allowed = self.table(expression, scope, knowledge, decl, at)
            if allowed is None:
                continue  # allows every assignment of its scope
            knowledge.constraints.append(Constraint(decl.line, decl.text, scope, allowed))

    def table(self, expression: Ground, scope: tuple, knowledge: Knowledge, decl: ast.ConstraintDecl,
              at: str) -> np.ndarray | None:
        variables = [knowledge.variables[i] for i in scope]
        sizes = [len(v.domain) for v in variables]
        total = math.prod(sizes)
        if total > MAX_SCOPE_ASSIGNMENTS:
            raise self.error(
                f"this constraint ranges over {len(scope)} variables with {describe_count(total)} joint assignments "
                f"(at most {MAX_SCOPE_ASSIGNMENTS}); split it with hidden variables", decl.line)
        self.assignments_used += total
        if self.assignments_used > MAX_TOTAL_ASSIGNMENTS:
            raise self.error(f"the constraints range over more than {MAX_TOTAL_ASSIGNMENTS} joint assignments "
                             f"in all; use smaller scopes or fewer constraints", decl.line)
        axes = {}
        for axis, variable in enumerate(variables):
            shape = [1] * len(variables)
            shape[axis] = len(variable.domain)
            axes[variable.id] = np.asarray(variable.domain, dtype=np.int64).reshape(shape)
        result = np.broadcast_to(_evaluate(expression, axes, self, True), sizes)
        if result.all():
            return None
        allowed = np.argwhere(result)
        if len(allowed) == 0:
            described = ", ".join(f"{v.name} in {_describe_domain(v.domain)}" for v in variables)
            raise self.error(f"no assignment satisfies this constraint{at} ({described}): {decl.text}",
                             decl.line)
        return allowed.astype(np.int32)

    # -- expressions
    def constant(self, node: ast.Node, env: dict, expected: str, what: str):
        expression = self.ground(node, env)
        if expression.kind != "const":
            raise self.error(f"{what} must be a constant (parameters and indices only), "
                             f"but it mentions a variable", node.line)
        if expected == "int" and expression.type != "int":
            raise self.error(f"{what} must be an integer, not a condition", node.line)
        if expected == "bool" and expression.type != "bool":
            raise self.error(f"{what} must be a condition, not an integer", node.line)
        return bool(expression.value) if expected == "bool" else int(expression.value)

    def ground(self, node: ast.Node, env: dict) -> Ground:
        line = node.line
        if isinstance(node, ast.Number):
            if node.value > _SAFE_INTEGER:
                raise self.error(f"number {node.value} is too large (at most 2**53)", line)
            return _const(node.value, line)
        if isinstance(node, ast.Boolean):
            return _const(node.value, line)
        if isinstance(node, ast.Name):
            if node.name in env:
                return _const(env[node.name], line)
            if node.name in self.params:
                return _const(self.params[node.name], line)
            if node.name in self.families:
                family = self.families[node.name]
                if family.arity:
                    raise self.error(f"{node.name} is a family; write {node.name}[...] with "
                                     f"{family.arity} index(es)", line)
                return Ground("var", "int", family.members[()].id, (), line)
            raise self.error(f"unknown name {node.name!r}", line)
        if isinstance(node, ast.Indexed):
            if node.name not in self.families:
                if node.name in self.params or node.name in env:
                    raise self.error(f"{node.name!r} is not a variable family and cannot be indexed", line)
                raise self.error(f"unknown variable {node.name!r}", line)
            family = self.families[node.name]
            if len(node.indices) != family.arity:
                raise self.error(f"{node.name} takes {family.arity} index(es), got {len(node.indices)}", line)
            index = tuple(self.constant(i, env, "int", f"an index of {node.name}") for i in node.indices)
            if index not in family.members:
                raise self.error(f"{node.name}[{', '.join(map(str, index))}] does not exist "
                                 f"({family.describe()})", line)
            return Ground("var", "int", family.members[index].id, (), line)
        if isinstance(node, ast.Unary):
            operand = self.ground(node.operand, env)
            if node.op == "not":
                self.require(operand, "'not'", line)
                return self.fold("not", (operand,), "bool", line)
            return self.fold("neg", (self.as_int(operand),), "int", line)
        if isinstance(node, ast.Binary):
            left = self.ground(node.left, env)
            if node.op in ("and", "or", "->", "<->"):
                self.require(left, f"'{node.op}'", line)
                if left.kind == "const" and node.op != "<->":
                    # Short-circuit: the right side is not grounded when the left decides,
                    # so `N > 0 -> x[N-1] == 1` is fine for N = 0.
                    decided = {"and": False, "or": True, "->": False}[node.op]
                    if left.value == decided:
                        return _const(node.op != "and", line)
                    right = self.ground(node.right, env)
                    self.require(right, f"'{node.op}'", line)
                    return right
                right = self.ground(node.right, env)
                self.require(right, f"'{node.op}'", line)
                return self.fold(node.op, (left, right), "bool", line)
            left, right = self.as_int(left), self.as_int(self.ground(node.right, env))
            if node.op == "+":
                return self.sum((left, right), line)
            result_type = "bool" if node.op in ("==", "!=", "<", "<=", ">", ">=") else "int"
            return self.fold(node.op, (left, right), result_type, line)
        if isinstance(node, ast.IfThenElse):
            condition = self.ground(node.condition, env)
            self.require(condition, "'if'", line)
            if condition.kind == "const":  # only the branch taken is grounded
                return self.ground(node.then if condition.value else node.otherwise, env)
            then, otherwise = self.ground(node.then, env), self.ground(node.otherwise, env)
            if then.type != otherwise.type:
                then, otherwise = self.as_int(then), self.as_int(otherwise)
            if then.kind == "const" and otherwise.kind == "const" and then.value == otherwise.value:
                return then
            return Ground("if", then.type, None, (condition, then, otherwise), line)
        if isinstance(node, ast.Call):
            arguments = tuple(self.as_int(self.ground(a, env)) for a in node.arguments)
            return self.fold(node.function, arguments, "int", line)
        if isinstance(node, ast.Aggregate):
            terms = [self.as_int(self.ground(node.body, inner))
                     for inner in self.bindings(node.binders, node.where, env, line, "sum(...)")]
            return self.sum(tuple(terms), line)
        raise self.error(f"unsupported expression {type(node).__name__}", line)

    def require(self, expression: Ground, where: str, line: int) -> None:
        if expression.type != "bool":
            raise self.error(f"{where} needs a condition (e.g. x == 1), not an integer expression", line)

    def as_int(self, expression: Ground) -> Ground:
        # Conditions count as 0/1 in arithmetic, so sum(i in ...: x[i] == 1) counts.
        if expression.type == "bool":
            if expression.kind == "const":
                return _const(int(expression.value), expression.line)
            return Ground("op", "int", "int", (expression,), expression.line)
        return expression

    def sum(self, terms: tuple, line: int) -> Ground:
        """An n-ary sum: constants folded into one, nested sums flattened."""
        constant, variable_terms = _const(0, line), []
        for term in terms:
            parts = term.children if term.kind == "op" and term.value == "sum" else (term,)
            for part in parts:
                if part.kind == "const":
                    constant = self.fold("+", (constant, part), "int", line)
                else:
                    variable_terms.append(part)
        if not variable_terms:
            return constant
        if constant.value != 0:
            variable_terms.append(constant)
        if len(variable_terms) == 1:
            return variable_terms[0]
        return Ground("op", "int", "sum", tuple(variable_terms), line)

    def fold(self, op: str, children: tuple, result_type: str, line: int) -> Ground:
        """An operation node, or its value when every operand is a constant (computed with
        Python integers: grounding folds constants for every binding, so this is hot)."""
        if all(c.kind == "const" for c in children):
            values = [c.value for c in children]
            if op in ("//", "%") and values[1] == 0:
                raise self.division_by_zero(op, line)
            value = _CONSTANT_OPERATIONS[op](*values)
            if result_type == "int" and abs(value) > _SAFE_INTEGER:
                raise self.overflow(line)
            return _const(bool(value) if result_type == "bool" else int(value), line)
        return Ground("op", result_type, op, children, line)


def _scope(expression: Ground) -> tuple:
    found: dict = {}
    stack = [expression]
    while stack:
        node = stack.pop()
        if node.kind == "var":
            found.setdefault(node.value, None)
        stack.extend(reversed(node.children))
    return tuple(found)


def _evaluate(expression: Ground, axes: dict, grounder: _Grounder, mask):
    """Evaluate over broadcast arrays of values. `mask` (True or a boolean array) marks where
    the expression is actually reached: the branches of `if` and the right side of and/or/->
    are only reached where the condition lets them, so a guarded division such as
    `if b != 0 then a // b else 0` is fine."""
    if expression.kind == "const":
        return np.bool_(expression.value) if expression.type == "bool" else np.int64(expression.value)
    if expression.kind == "var":
        return axes[expression.value]
    children = expression.children
    if expression.kind == "if":
        condition = _evaluate(children[0], axes, grounder, mask)
        then = _evaluate(children[1], axes, grounder, mask & condition)
        otherwise = _evaluate(children[2], axes, grounder, mask & ~condition)
        return np.where(condition, then, otherwise)
    op = expression.value
    if op in ("and", "or", "->"):
        left = _evaluate(children[0], axes, grounder, mask)
        reached = mask & ~left if op == "or" else mask & left
        right = _evaluate(children[1], axes, grounder, reached)
        return _apply(op, [left, right], expression.line, grounder, mask)
    if op == "sum":
        total = _evaluate(children[0], axes, grounder, mask)
        for child in children[1:]:
            total = _apply("+", [total, _evaluate(child, axes, grounder, mask)], expression.line, grounder, mask)
        return total
    values = [_evaluate(c, axes, grounder, mask) for c in children]
    return _apply(op, values, expression.line, grounder, mask)


def _apply(op: str, values: list, line: int, grounder: _Grounder, mask):
    if op in ("//", "%"):
        divisor = np.asarray(values[1])
        zero = divisor == 0
        if np.any(zero & mask):
            raise grounder.division_by_zero(op, line)
        if np.any(zero):  # only where the expression is not reached
            values = [values[0], np.where(zero, 1, divisor)]
    if op == "*":
        magnitude = np.abs(np.asarray(values[0], dtype=np.float64)) * np.abs(np.asarray(values[1], dtype=np.float64))
        if np.any((magnitude > _SAFE_INTEGER) & mask):
            raise grounder.overflow(line)
    with np.errstate(over="ignore"):
        result = _OPERATIONS[op](*values)
    if np.asarray(result).dtype.kind == "i" and np.any((np.abs(result) > _SAFE_INTEGER) & mask):
        raise grounder.overflow(line)
    return result


_OPERATIONS = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "//": np.floor_divide, "%": np.mod,
    "neg": np.negative, "abs": np.abs, "int": lambda x: np.asarray(x).astype(np.int64),
    "==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
    ">": np.greater, ">=": np.greater_equal,
    "and": np.logical_and, "or": np.logical_or, "not": np.logical_not,
    "->": lambda a, b: np.logical_or(np.logical_not(a), b),
    "<->": np.equal,
    "min": lambda *xs: _reduce(np.minimum, xs), "max": lambda *xs: _reduce(np.maximum, xs),
}


_CONSTANT_OPERATIONS = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod,
    "neg": operator.neg, "abs": abs, "int": int,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "and": lambda a, b: a and b, "or": lambda a, b: a or b, "not": operator.not_,
    "->": lambda a, b: (not a) or b, "<->": operator.eq,
    "min": lambda *xs: min(xs), "max": lambda *xs: max(xs),
}


def _reduce(function, values):
    result = values[0]
    for value in values[1:]:
        result = function(result, value)
    return result


def describe_count(count: int) -> str:
    """A count for a message: its digits, or "about 1.2e+6021" when it has more than 30 (Python
    refuses to print an int of more than 4300 digits, and nobody reads them)."""
    if count < 10**30:
        return str(count)
    exponent = math.log10(count)
    return f"about {10 ** (exponent % 1):.1f}e+{int(exponent)}"


def _describe_domain(domain: tuple) -> str:
    if domain == tuple(range(domain[0], domain[-1] + 1)):
        return f"{domain[0]}..{domain[-1]}"
    return "{" + ", ".join(map(str, domain)) + "}"


def ground(program: ast.Program, params: dict | None = None) -> Knowledge:
    """Ground a parsed program with parameter overrides (name -> int)."""
    return _Grounder(program.path).run(program, params or {})


def load_knowledge(path: str | Path, params: dict | None = None) -> Knowledge:
    """Read, parse and ground a logic file. Every problem raises LogicError(`path:line: message`)."""
    return ground(ast.parse(read_logic_file(path), str(path)), params)


def evaluate_condition(node: ast.Node, knowledge: Knowledge, values: dict, path: str) -> np.ndarray:
    """Evaluate a condition over named variables given as arrays of values (one entry per example).

    Used for training-support restrictions written in task files. `values` maps variable
    names (e.g. "a[0]") to equal-length integer arrays; names resolve as in the logic file
    (its parameters and variable families). Returns a boolean array, one entry per example.
    """
    grounder = _Grounder(path, knowledge.params, _families_of(knowledge))
    arrays = {name: np.asarray(array, dtype=np.int64).reshape(-1) for name, array in values.items()}
    lengths = {len(array) for array in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"evaluate_condition: the value arrays have different lengths {sorted(lengths)}")
    length = lengths.pop() if lengths else 0
    try:
        expression = grounder.ground(node, {})
    except RecursionError:
        raise LogicError("the condition is nested too deeply to evaluate", path, node.line) from None
    if expression.type != "bool":
        raise LogicError("the restriction must be a condition, not an integer expression", path, node.line)
    axes = {variable.id: arrays[variable.name] for variable in knowledge.variables if variable.name in arrays}
    missing = [knowledge.variables[i].name for i in _scope(expression) if i not in axes]
    if missing:
        raise LogicError(f"the restriction mentions {', '.join(missing)}, which the examples do not observe",
                         path, node.line)
    return np.broadcast_to(_evaluate(expression, axes, grounder, True), (length,)).astype(bool)
