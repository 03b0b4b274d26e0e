"""Answers about ground knowledge straight from its constraint tables, without any circuit:
satisfaction, model counts, every model, and completing a partial assignment. The compiler's
cache checks a stored circuit against the knowledge it claims to encode with these."""
from __future__ import annotations

import math

import numpy as np

from .ground import Knowledge


class SearchLimitExceeded(Exception):
    """BruteForce.complete gave up: the search tried more assignments than it was allowed."""


class BruteForce:
    """Answers about ground knowledge straight from its constraint tables, without any circuit.

    The compiler uses it to check a cached circuit against the knowledge it claims to
    encode; everything here enumerates, so callers bound the work (`max_assignments`,
    `max_steps`). Assignments are domain *positions*, indexed by variable id.
    """

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge
        self.sizes = [len(v.domain) for v in knowledge.variables]
        self._tables: dict = {}  # constraint index -> dense boolean table over its scope

    def table(self, index: int) -> np.ndarray:
        """The dense table of constraint `index`: True at the position tuples it allows."""
        if index not in self._tables:
            constraint = self.knowledge.constraints[index]
            dense = np.zeros([self.sizes[v] for v in constraint.scope], dtype=bool)
            dense[tuple(np.asarray(constraint.allowed, dtype=np.int64).reshape(-1, len(constraint.scope)).T)] = True
            self._tables[index] = dense
        return self._tables[index]

    def satisfied(self, assignments: np.ndarray) -> np.ndarray:
        """Which rows of `assignments` ([n, number of variables] positions) satisfy every constraint."""
        assignments = np.asarray(assignments, dtype=np.int64)
        return self._satisfied_by(lambda variable_id: assignments[:, variable_id], len(assignments))

    def _satisfied_by(self, column, length: int) -> np.ndarray:
        """Which of `length` assignments satisfy every constraint; column(v): the positions of v."""
        result = np.ones(length, dtype=bool)
        for index, constraint in enumerate(self.knowledge.constraints):
            result &= self.table(index)[tuple(column(v) for v in constraint.scope)]
        return result

    def count_models(self, max_assignments: int) -> int | None:
        """The exact number of satisfying joint assignments, or None when the constrained
        variables have more than `max_assignments` joint assignments to enumerate."""
        constrained = sorted({v for constraint in self.knowledge.constraints for v in constraint.scope})
        if math.prod(self.sizes[v] for v in constrained) > max_assignments:
            return None
        in_scope = set(constrained)
        free_choices = math.prod(size for v, size in enumerate(self.sizes) if v not in in_scope)
        return sum(int(ok.sum()) for _, ok in self._enumerate(constrained)) * free_choices

    def models(self, max_assignments: int) -> np.ndarray | None:
        """Every satisfying joint assignment ([n, number of variables] positions), or None when
        there are more than `max_assignments` joint assignments to enumerate."""
        if math.prod(self.sizes) > max_assignments:
            return None
        every = list(range(len(self.sizes)))
        found = [np.stack(columns, axis=1)[ok] for columns, ok in self._enumerate(every)]
        return np.concatenate(found) if found else np.zeros((0, len(self.sizes)), dtype=np.int64)

    def _enumerate(self, variables: list, chunk: int = 1 << 16):
        """All joint assignments of `variables` (which the constraints' scopes must lie within),
        in chunks: (one position array per variable, which of them satisfy every constraint)."""
        radices = [self.sizes[v] for v in variables]
        space = math.prod(radices)
        for start in range(0, space, chunk):
            codes = np.arange(start, min(start + chunk, space), dtype=np.int64)
            length, columns = len(codes), {}
            for v, radix in zip(reversed(variables), reversed(radices)):
                codes, columns[v] = np.divmod(codes, radix)
            yield [columns[v] for v in variables], self._satisfied_by(columns.__getitem__, length)

    def complete(self, fixed: dict, max_steps: int = 100_000) -> list | None:
        """A full assignment that extends `fixed` (variable id -> position) and satisfies
        every constraint, or None when there is none.

        Depth-first over the other variables in the order the constraints mention them,
        each constraint checked as soon as its scope is assigned, so chained knowledge
        (carries, running sums) is completed with little backtracking. Raises
        SearchLimitExceeded after `max_steps` trial assignments.
        """
        knowledge = self.knowledge
        order = list(dict.fromkeys([v for c in knowledge.constraints for v in c.scope]
                                   + [v.id for v in knowledge.variables]))
        free = [v for v in order if v not in fixed]
        depth_of = {v: depth for depth, v in enumerate(free)}
        assignment = [-1] * len(knowledge.variables)
        for variable_id, position in fixed.items():
            assignment[variable_id] = position
        checks: list = [[] for _ in free]  # constraints whose scope is complete at each depth
        for index, constraint in enumerate(knowledge.constraints):
            depths = [depth_of[v] for v in constraint.scope if v in depth_of]
            if depths:
                checks[max(depths)].append(index)
            elif not self._allows(index, assignment):
                return None  # the fixed variables alone violate it

        tried = [-1] * len(free)  # the position being tried at each depth
        depth, steps = 0, 0
        while depth >= 0:
            if depth == len(free):
                return assignment
            variable_id = free[depth]
            tried[depth] += 1
            if tried[depth] == self.sizes[variable_id]:
                tried[depth], assignment[variable_id] = -1, -1
                depth -= 1
                continue
            steps += 1
            if steps > max_steps:
                raise SearchLimitExceeded(f"no decision after {max_steps} trial assignments")
            assignment[variable_id] = tried[depth]
            if all(self._allows(index, assignment) for index in checks[depth]):
                depth += 1
        return None

    def _allows(self, index: int, assignment: list) -> bool:
        scope = self.knowledge.constraints[index].scope
        return bool(self.table(index)[tuple(assignment[v] for v in scope)])
