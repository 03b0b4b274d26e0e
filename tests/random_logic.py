"""Random small knowledge bases, written as logic-file text, with a brute-force reference.

Used by test_compiler.py and test_circuit.py. Every expression is generated twice: in the
logic language and as the equivalent Python expression, so the brute-force enumeration
is independent of the parser, grounder and compiler under test.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field


@dataclass
class RandomKB:
    text: str
    names: list  # variable names, in declaration order
    roles: dict  # name -> concept | hidden | label
    domains: dict  # name -> list of values
    constraints: list = field(default_factory=list)  # Python expressions over the names

    @property
    def concepts(self) -> list:
        return [n for n in self.names if self.roles[n] == "concept"]

    @property
    def labels(self) -> list:
        return [n for n in self.names if self.roles[n] == "label"]

    def models(self) -> list:
        """Every satisfying joint assignment, as dicts name -> value."""
        compiled = [compile(c, "<constraint>", "eval") for c in self.constraints]
        result = []
        for values in itertools.product(*(self.domains[n] for n in self.names)):
            env = dict(zip(self.names, values))
            if all(eval(code, {"min": min, "max": max, "abs": abs}, env) for code in compiled):
                result.append(env)
        return result

    def log_probability(self, models: list, concept_probs: dict, evidence: dict | None = None) -> float:
        """log sum over models (agreeing with the observed labels) of prod p(concept = value)."""
        total = 0.0
        for model in models:
            if evidence and any(v is not None and model[n] != v for n, v in evidence.items()):
                continue
            total += math.prod(concept_probs[n][self.domains[n].index(model[n])] for n in self.concepts)
        return math.log(total) if total > 0 else -math.inf


class _Expressions:
    """Random integer expressions, as (logic text, Python text) pairs."""

    def __init__(self, rng: random.Random, names: list):
        self.rng = rng
        self.names = names

    def integer(self, depth: int = 0) -> tuple[str, str]:
        rng = self.rng
        if depth >= 2 or rng.random() < 0.35:
            if rng.random() < 0.75:
                name = rng.choice(self.names)
                return name, name
            value = str(rng.randint(0, 5))
            return value, value
        kind = rng.choice(["+", "-", "*", "//", "%", "min", "max", "abs", "if", "bool"])
        if kind in ("+", "-", "*"):
            (a, pa), (b, pb) = self.integer(depth + 1), self.integer(depth + 1)
            return f"({a} {kind} {b})", f"({pa} {kind} {pb})"
        if kind in ("//", "%"):  # a nonzero constant divisor, possibly negative
            (a, pa) = self.integer(depth + 1)
            divisor = rng.choice([2, 3, 4, -3])
            return f"({a} {kind} {divisor})", f"({pa} {kind} ({divisor}))"
        if kind in ("min", "max"):
            (a, pa), (b, pb) = self.integer(depth + 1), self.integer(depth + 1)
            return f"{kind}({a}, {b})", f"{kind}({pa}, {pb})"
        if kind == "abs":
            (a, pa) = self.integer(depth + 1)
            return f"abs({a})", f"abs({pa})"
        if kind == "if":
            (c, pc), (a, pa), (b, pb) = self.condition(depth + 1), self.integer(depth + 1), self.integer(depth + 1)
            return f"(if {c} then {a} else {b})", f"(({pa}) if ({pc}) else ({pb}))"
        (c, pc) = self.condition(depth + 1)  # a condition counts as 0/1
        return f"({c})", f"int({pc})"

    def condition(self, depth: int = 0) -> tuple[str, str]:
        rng = self.rng
        kind = rng.choice(["cmp", "cmp", "cmp", "and", "or", "not", "->", "<->"])
        if kind == "cmp" or depth >= 2:
            op = rng.choice(["==", "!=", "<", "<=", ">", ">="])
            (a, pa), (b, pb) = self.integer(depth + 1), self.integer(depth + 1)
            return f"{a} {op} {b}", f"({pa}) {op} ({pb})"
        if kind == "not":
            (a, pa) = self.condition(depth + 1)
            return f"not ({a})", f"not ({pa})"
        (a, pa), (b, pb) = self.condition(depth + 1), self.condition(depth + 1)
        if kind in ("and", "or"):
            return f"({a}) {kind} ({b})", f"({pa}) {kind} ({pb})"
        if kind == "->":
            return f"({a}) -> ({b})", f"(not ({pa}) or ({pb}))"
        return f"({a}) <-> ({b})", f"(bool({pa}) == bool({pb}))"


def random_kb(rng: random.Random) -> RandomKB:
    """2..4 concepts (domains of 2..4 values), 0..2 hidden and 1..2 labels that are functions
    of the concepts (through `x == lo + expr % size`), and 0..2 random extra constraints.
    The result may be unsatisfiable: callers skip those (compile_file raises LogicError)."""
    names, roles, domains, lines, constraints = [], {}, {}, [], []

    def declare(role: str, name: str) -> None:
        size = rng.randint(2, 4)
        if role != "label" and rng.random() < 0.3:
            values = sorted(rng.sample(range(-3, 8), size))
            lines.append(f"{role} {name} : {{{', '.join(map(str, values))}}}")
        else:
            low = 0 if role == "label" else rng.randint(-2, 2)
            values = list(range(low, low + size))
            lines.append(f"{role} {name} : {low}..{low + size - 1}")
        names.append(name)
        roles[name] = role
        domains[name] = values

    for i in range(rng.randint(2, 4)):
        declare("concept", f"c{i}")
    defined = list(names)
    for role, prefix, count in (("hidden", "h", rng.randint(0, 2)), ("label", "y", rng.randint(1, 2))):
        for i in range(count):
            name = f"{prefix}{i}"
            declare(role, name)
            expression, python = _Expressions(rng, defined).integer()
            size, values = len(domains[name]), domains[name]
            # A function of what is defined so far, mapped onto the domain's values.
            lines.append(f"constraint {name} == (if ({expression}) % {size} == 0 then {values[0]} else "
                         + " else ".join(f"if ({expression}) % {size} == {k} then {values[k]}"
                                         for k in range(1, size - 1))
                         + (" else " if size > 2 else "") + f"{values[-1]})"
                         )
            constraints.append(f"{name} == [{', '.join(map(str, values))}][({python}) % {size}]")
            defined.append(name)
    for _ in range(rng.randint(0, 2)):
        condition, python = _Expressions(rng, names).condition()
        lines.append(f"constraint {condition}")
        constraints.append(python)
    text = "# random knowledge base\n" + "\n".join(lines) + "\n"
    return RandomKB(text, names, roles, domains, constraints)
