"""Grounding: a parsed program + parameter values -> finite categorical knowledge.

Parameters are substituted, families are expanded into one variable per index tuple,
`forall` constraints into one ground constraint per binding, and every ground
constraint is turned into the table of value tuples it allows over its own (small)
scope by vectorised numpy evaluation. The joint space is never enumerated.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LogicError
from . import syntax as ast

MAX_DOMAIN_SIZE = 10_000
MAX_SCOPE_ASSIGNMENTS = 4_000_000  # beyond this, ask the user to introduce hidden variables
MAX_GROUND_CONSTRAINTS = 200_000
MAX_FAMILY_SIZE = 100_000
_SAFE_INTEGER = 2**53


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
# A ground expression is a small tree of tuples, with constants folded:
#   ("const", value)  ("var", variable_id)  ("op", op, (children...))  ("if", c, a, b)
# Each carries its static type: "int" or "bool".

@dataclass(frozen=True)
class Ground:
    kind: str
    type: str
    value: object = None
    children: tuple = ()
    line: int = 0


def _const(value, line) -> Ground:
    return Ground("const", "bool" if isinstance(value, (bool, np.bool_)) else "int", value, (), line)


class _Grounder:
    def __init__(self, program: ast.Program, overrides: dict):
        self.path = program.path
        self.program = program
        self.overrides = dict(overrides)
        self.params: dict = {}
        self.families: dict = {}  # name -> (decl, {index tuple: Variable})
        self.knowledge = Knowledge(program.path, self.params)

    def error(self, message: str, line: int) -> LogicError:
        return LogicError(message, self.path, line)

    # -- declarations
    def run(self) -> Knowledge:
        declared_params = [s.name for s in self.program.statements if isinstance(s, ast.ParamDecl)]
        for name in self.overrides:
            if name not in declared_params:
                known = ", ".join(declared_params) or "none"
                raise LogicError(f"unknown parameter {name!r} (the file declares: {known})", self.path)
        for statement in self.program.statements:
            if isinstance(statement, ast.ParamDecl):
                self.declare_param(statement)
            elif isinstance(statement, ast.VariableDecl):
                self.declare_variables(statement)
        for statement in self.program.statements:
            if isinstance(statement, ast.ConstraintDecl):
                self.ground_constraint(statement)
        return self.knowledge

    def declare_param(self, decl: ast.ParamDecl) -> None:
        if decl.name in self.params:
            raise self.error(f"parameter {decl.name!r} is declared twice", decl.line)
        if decl.name in self.overrides:
            value = self.overrides[decl.name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise self.error(f"parameter {decl.name!r} must be an integer, got {value!r}", decl.line)
            value = int(value)
        else:
            value = self.constant(decl.value, {}, "int", f"the value of {decl.name}")
        self.params[decl.name] = value

    def declare_variables(self, decl: ast.VariableDecl) -> None:
        if decl.name in self.families:
            first = self.families[decl.name][0].line
            raise self.error(f"variable {decl.name!r} is already declared on line {first}", decl.line)
        if decl.name in self.params:
            raise self.error(f"{decl.name!r} is already a parameter", decl.line)
        members = {}
        for env in self.bindings(decl.binders, None, {}, decl.line, f"the family {decl.name}"):
            index = tuple(env[b.name] for b in decl.binders)
            domain = self.domain(decl, env)
            name = decl.name + (f"[{', '.join(map(str, index))}]" if decl.binders else "")
            variable = Variable(len(self.knowledge.variables), name, decl.name, index, decl.role, domain, decl.line)
            members[index] = variable
            self.knowledge.variables.append(variable)
            if len(members) > MAX_FAMILY_SIZE:
                raise self.error(f"family {decl.name} has more than {MAX_FAMILY_SIZE} members", decl.line)
        self.families[decl.name] = (decl, members)

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
            values = tuple(self.constant(v, env, "int", what) for v in decl.domain.values)
            if len(set(values)) != len(values):
                raise self.error(f"{what} lists a value twice", decl.line)
            values = tuple(sorted(values))
        if len(values) < 2:
            raise self.error(f"{what} has a single value; declare a parameter instead", decl.line)
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
            raise self.error(f"the range of {first.name} in {what} has {high - low + 1} values", line)
        for value in range(low, high + 1):
            yield from self.bindings(rest, where, {**env, first.name: value}, line, what)

    # -- constraints
    def ground_constraint(self, decl: ast.ConstraintDecl) -> None:
        for env in self.bindings(decl.binders, decl.where, {}, decl.line, "the constraint"):
            expression = self.ground(decl.body, env)
            if expression.type != "bool":
                raise self.error("a constraint must be a condition (a comparison or a boolean), "
                                 "not an integer expression", decl.line)
            scope = _scope(expression)
            if not scope:
                if not bool(expression.value):
                    raise self.error(f"constraint is false ({decl.text})", decl.line)
                continue  # a tautology after substitution: nothing to compile
            allowed = self.table(expression, scope, decl)
            self.knowledge.constraints.append(Constraint(decl.line, decl.text, scope, allowed))
            if len(self.knowledge.constraints) > MAX_GROUND_CONSTRAINTS:
                raise self.error(f"more than {MAX_GROUND_CONSTRAINTS} ground constraints", decl.line)

    def table(self, expression: Ground, scope: tuple, decl: ast.ConstraintDecl) -> np.ndarray:
        variables = [self.knowledge.variables[i] for i in scope]
        sizes = [len(v.domain) for v in variables]
        total = int(np.prod(sizes, dtype=object))
        if total > MAX_SCOPE_ASSIGNMENTS:
            raise self.error(
                f"this constraint ranges over {len(scope)} variables with {total} joint assignments "
                f"(at most {MAX_SCOPE_ASSIGNMENTS}); split it with hidden variables", decl.line)
        axes = {}
        for axis, variable in enumerate(variables):
            shape = [1] * len(variables)
            shape[axis] = len(variable.domain)
            axes[variable.id] = np.asarray(variable.domain, dtype=np.int64).reshape(shape)
        result = np.broadcast_to(_evaluate(expression, axes, self), sizes)
        allowed = np.argwhere(result)
        if len(allowed) == 0:
            described = ", ".join(f"{v.name} in {_describe_domain(v.domain)}" for v in variables)
            raise self.error(f"no assignment satisfies this constraint ({described})", decl.line)
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
            return _const(node.value, line)
        if isinstance(node, ast.Boolean):
            return _const(node.value, line)
        if isinstance(node, ast.Name):
            if node.name in env:
                return _const(env[node.name], line)
            if node.name in self.params:
                return _const(self.params[node.name], line)
            if node.name in self.families:
                decl, members = self.families[node.name]
                if decl.binders:
                    raise self.error(f"{node.name} is a family; write {node.name}[...] with "
                                     f"{len(decl.binders)} index(es)", line)
                return Ground("var", "int", members[()].id, (), line)
            raise self.error(f"unknown name {node.name!r}", line)
        if isinstance(node, ast.Indexed):
            if node.name not in self.families:
                if node.name in self.params or node.name in env:
                    raise self.error(f"{node.name!r} is not a variable family and cannot be indexed", line)
                raise self.error(f"unknown variable {node.name!r}", line)
            decl, members = self.families[node.name]
            if len(node.indices) != len(decl.binders):
                raise self.error(f"{node.name} takes {len(decl.binders)} index(es), got {len(node.indices)}", line)
            index = tuple(self.constant(i, env, "int", f"an index of {node.name}") for i in node.indices)
            if index not in members:
                raise self.error(f"{node.name}[{', '.join(map(str, index))}] does not exist "
                                 f"({_describe_family(decl.name, members)})", line)
            return Ground("var", "int", members[index].id, (), line)
        if isinstance(node, ast.Unary):
            operand = self.ground(node.operand, env)
            if node.op == "not":
                self.require(operand, "bool", "'not'", line)
                return self.fold("not", (operand,), "bool", line)
            return self.fold("neg", (self.as_int(operand),), "int", line)
        if isinstance(node, ast.Binary):
            left, right = self.ground(node.left, env), self.ground(node.right, env)
            if node.op in ("and", "or", "->", "<->"):
                self.require(left, "bool", f"'{node.op}'", line)
                self.require(right, "bool", f"'{node.op}'", line)
                return self.fold(node.op, (left, right), "bool", line)
            left, right = self.as_int(left), self.as_int(right)
            result_type = "bool" if node.op in ("==", "!=", "<", "<=", ">", ">=") else "int"
            return self.fold(node.op, (left, right), result_type, line)
        if isinstance(node, ast.IfThenElse):
            condition = self.ground(node.condition, env)
            self.require(condition, "bool", "'if'", line)
            then, otherwise = self.ground(node.then, env), self.ground(node.otherwise, env)
            if then.type != otherwise.type:
                then, otherwise = self.as_int(then), self.as_int(otherwise)
            if condition.kind == "const":
                return then if condition.value else otherwise
            return Ground("if", then.type, None, (condition, then, otherwise), line)
        if isinstance(node, ast.Call):
            arguments = tuple(self.as_int(self.ground(a, env)) for a in node.arguments)
            return self.fold(node.function, arguments, "int", line)
        if isinstance(node, ast.Aggregate):
            terms = [self.as_int(self.ground(node.body, inner))
                     for inner in self.bindings(node.binders, node.where, env, line, "sum(...)")]
            total = _const(0, line)
            for term in terms:
                total = self.fold("+", (total, term), "int", line)
            return total
        raise self.error(f"unsupported expression {type(node).__name__}", line)

    def require(self, expression: Ground, expected: str, where: str, line: int) -> None:
        if expression.type != expected:
            raise self.error(f"{where} needs a condition (e.g. x == 1), not an integer expression", line)

    def as_int(self, expression: Ground) -> Ground:
        # Conditions count as 0/1 in arithmetic, so sum(i in ...: x[i] == 1) counts.
        if expression.type == "bool":
            if expression.kind == "const":
                return _const(int(expression.value), expression.line)
            return Ground("op", "int", "int", (expression,), expression.line)
        return expression

    def fold(self, op: str, children: tuple, result_type: str, line: int) -> Ground:
        if all(c.kind == "const" for c in children):
            values = [np.int64(c.value) if c.type == "int" else np.bool_(c.value) for c in children]
            value = _apply(op, values, line, self)
            value = bool(value) if result_type == "bool" else int(value)
            return _const(value, line)
        return Ground("op", result_type, op, children, line)


def _scope(expression: Ground) -> tuple:
    found: dict = {}

    def visit(node: Ground) -> None:
        if node.kind == "var":
            found.setdefault(node.value, None)
        for child in node.children:
            visit(child)

    visit(expression)
    return tuple(found)


def _evaluate(expression: Ground, axes: dict, grounder: _Grounder):
    if expression.kind == "const":
        return np.bool_(expression.value) if expression.type == "bool" else np.int64(expression.value)
    if expression.kind == "var":
        return axes[expression.value]
    if expression.kind == "if":
        condition, then, otherwise = (_evaluate(c, axes, grounder) for c in expression.children)
        return np.where(condition, then, otherwise)
    values = [_evaluate(c, axes, grounder) for c in expression.children]
    return _apply(expression.value, values, expression.line, grounder)


def _apply(op: str, values: list, line: int, grounder: _Grounder):
    if op in ("//", "%"):
        if np.any(np.asarray(values[1]) == 0):
            raise grounder.error(f"division by zero is possible in '{op}' (its right side can be 0)", line)
    with np.errstate(over="ignore"):
        result = _OPERATIONS[op](*values)
    if np.asarray(result).dtype.kind == "i" and np.any(np.abs(np.asarray(result)) > _SAFE_INTEGER):
        raise grounder.error("integer overflow: a value exceeds 2**53", line)
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


def _reduce(function, values):
    result = values[0]
    for value in values[1:]:
        result = function(result, value)
    return result


def _describe_domain(domain: tuple) -> str:
    if domain == tuple(range(domain[0], domain[-1] + 1)):
        return f"{domain[0]}..{domain[-1]}"
    return "{" + ", ".join(map(str, domain)) + "}"


def _describe_family(name: str, members: dict) -> str:
    indices = sorted(members)
    if not indices or not indices[0]:
        return f"{name} is a single variable"
    lows = [min(i[k] for i in indices) for k in range(len(indices[0]))]
    highs = [max(i[k] for i in indices) for k in range(len(indices[0]))]
    ranges = ", ".join(f"{lo}..{hi}" for lo, hi in zip(lows, highs))
    return f"{name} has indices {ranges}"


def ground(program: ast.Program, params: dict | None = None) -> Knowledge:
    """Ground a parsed program with parameter overrides (name -> int)."""
    return _Grounder(program, params or {}).run()


def load_knowledge(path: str | Path, params: dict | None = None) -> Knowledge:
    """Read, parse and ground a logic file. Every problem raises LogicError(`path:line: message`)."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogicError("logic file not found", path) from None
    except UnicodeDecodeError:
        raise LogicError("logic file is not UTF-8 text", path) from None
    except OSError as error:
        raise LogicError(f"cannot read the logic file: {error.strerror}", path) from None
    return ground(ast.parse(text, path), params)


def evaluate_condition(node: ast.Node, knowledge: Knowledge, values: dict, path: str) -> np.ndarray:
    """Evaluate a condition over named variables given as arrays of values (one entry per example).

    Used for training-support restrictions written in task files. `values` maps variable
    names (e.g. "a[0]") to equal-length integer arrays.
    """
    grounder = _Grounder(ast.Program(path), {})
    grounder.params.update(knowledge.params)
    # Re-create the families of the knowledge so names resolve as in the logic file.
    for variable in knowledge.variables:
        decl_members = grounder.families.setdefault(
            variable.family, (_FamilyStub(variable.line, len(variable.index)), {}))
        decl_members[1][variable.index] = variable
    expression = grounder.ground(node, {})
    if expression.type != "bool":
        raise LogicError("the restriction must be a condition, not an integer expression", path, node.line)
    axes = {variable.id: np.asarray(values[variable.name], dtype=np.int64)
            for variable in knowledge.variables if variable.name in values}
    missing = [knowledge.variables[i].name for i in _scope(expression) if i not in axes]
    if missing:
        raise LogicError(f"the restriction mentions {', '.join(missing)}, which the examples do not observe",
                         path, node.line)
    length = len(next(iter(values.values())))
    return np.broadcast_to(_evaluate(expression, axes, grounder), (length,)).copy()


@dataclass(frozen=True)
class _FamilyStub:
    line: int
    arity: int

    @property
    def binders(self):
        return (None,) * self.arity

    @property
    def name(self):
        return ""


def all_assignments(variables: list) -> itertools.product:
    """Every joint assignment (as value tuples) of a few variables; for tests and small cases."""
    return itertools.product(*(v.domain for v in variables))
