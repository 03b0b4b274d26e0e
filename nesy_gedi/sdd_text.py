"""SDD and vtree files as text, read without trusting them.

`SddText.parse` checks an SDD file line by line against its vtree (ids, children, literals,
vtree nodes: everything that libsdd and KLay index without checking) and raises
`EntryRejected` saying what is off; the parsed circuit then gives its exact model counts,
satisfiability over many partial assignments at once, paths to models, and the SDD rebuilt
with PySDD operations (`SddText.build`), never with libsdd's own file reader.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from pysdd.sdd import SddManager, SddNode


class EntryRejected(Exception):
    """A cache entry that cannot be trusted; the message says why, in a few words."""


@dataclass
class VtreeShape:
    """A vtree as a manager writes it: node ids are in-order positions, children before parents,
    so every subtree is a contiguous range of positions and "inside" is an interval test."""
    var_of: list  # position -> variable (0 for an internal node)
    left: list  # position -> left child (-1 for a leaf)
    right: list
    first: list  # position -> the first and last position of its subtree
    last: list
    var_count: list  # position -> variables below
    leaf_of: dict  # variable -> leaf position
    root: int

    @classmethod
    def parse(cls, text: str) -> VtreeShape:
        """Only ever given a vtree this process wrote (the cached one must equal it byte for byte)."""
        rows = [line.split() for line in text.splitlines() if line[:1] in ("L", "I")]
        size = len(rows)
        shape = cls([0] * size, [-1] * size, [-1] * size, list(range(size)), list(range(size)), [1] * size, {},
                    int(rows[-1][1]))
        for row in rows:  # children before parents
            position = int(row[1])
            if row[0] == "L":
                shape.var_of[position] = int(row[2])
                shape.leaf_of[int(row[2])] = position
            else:
                left, right = int(row[2]), int(row[3])
                shape.left[position], shape.right[position] = left, right
                shape.first[position], shape.last[position] = shape.first[left], shape.last[right]
                shape.var_count[position] = shape.var_count[left] + shape.var_count[right]
        return shape

    def inside(self, position: int, ancestor: int) -> bool:
        return self.first[ancestor] <= position <= self.last[ancestor]


NODE_FALSE, NODE_TRUE, NODE_LITERAL, NODE_DECISION = 1, 2, 3, 4  # the node kinds of an SDD file: F, T, L, D
_KIND_LETTERS = {b"F": NODE_FALSE, b"T": NODE_TRUE, b"L": NODE_LITERAL, b"D": NODE_DECISION}
_KIND_MARK = 10**13  # kind letters are parsed as the numbers -(mark + kind): beyond any 12-digit number


@dataclass
class SddText:
    """An SDD file checked against its vtree, so that KLay, which indexes its arrays with the
    file's numbers unchecked, can read it safely (and `build` can hand it to PySDD).

    Lists indexed by node id: the kind (NODE_FALSE, NODE_TRUE, NODE_LITERAL, NODE_DECISION),
    a literal node's literal, the vtree position a node is normalized for, and a decision
    node's elements as the range element_start[id]:element_end[id] of `primes` and `subs`.
    `order` holds the ids as the file lists them: children first, the root last.
    """
    kind: list
    literal: list
    vtree: list
    element_start: list
    element_end: list
    primes: list
    subs: list
    order: list

    @property
    def root(self) -> int:
        return self.order[-1]

    def elements(self, node: int) -> zip:
        start, end = self.element_start[node], self.element_end[node]
        return zip(self.primes[start:end], self.subs[start:end])

    @classmethod
    def parse(cls, data: bytes, shape: VtreeShape) -> SddText:
        """Checked with whole-file and numpy operations: an SDD file has millions of lines."""
        count, body = cls._node_lines(data)
        lines = body.count(b"\n")
        if len(body) - len(body.translate(None, b"FTLD")) != lines:  # a letter in mid-line
            raise EntryRejected("knowledge.sdd has a malformed node line")
        if count != lines:
            raise EntryRejected(f"knowledge.sdd claims {count} nodes but has {lines}")
        text = body
        for letter, kind in _KIND_LETTERS.items():
            text = text.replace(letter, b"-%d" % (_KIND_MARK + kind))
        numbers = np.fromstring(text, dtype=np.int64, sep=" ")
        if len(numbers) != body.count(b" ") + count:  # single spaces, one node per line: tokens = spaces + lines
            raise EntryRejected("knowledge.sdd has a malformed node line")
        is_start = numbers <= -_KIND_MARK
        starts = np.flatnonzero(is_start)
        # A number of 13 digits or more (they saturate at 2**63) is refused: libsdd would read another.
        if len(starts) != count or starts[0] != 0 or (np.abs(numbers[~is_start]) >= 10**12).any():
            raise EntryRejected("knowledge.sdd has a malformed node line")
        kinds = -numbers[starts] - _KIND_MARK
        fields = np.diff(np.append(starts, len(numbers))) - 1  # numbers after the kind letter
        ids = numbers[starts + 1]
        if ids.min() < 0 or ids.max() >= count or np.bincount(ids, minlength=count).max() != 1:
            raise EntryRejected("knowledge.sdd has a node id out of range or repeated")
        line_of = np.empty(count, dtype=np.int64)
        line_of[ids] = np.arange(count)
        kind_of = np.zeros(count, dtype=np.int64)
        kind_of[ids] = kinds
        # The literal (third number of an L line) is the only number that may be negative.
        is_literal_line = kinds == NODE_LITERAL
        signed = np.zeros(len(numbers), dtype=bool)
        signed[starts] = True
        signed[starts[is_literal_line] + 3] = True
        if (numbers[~signed] < 0).any():
            raise EntryRejected("knowledge.sdd has a negative number where a count or id belongs")

        expected_fields = np.select([kinds <= NODE_TRUE, is_literal_line], [1, 3],
                                    3 + 2 * numbers[np.minimum(starts + 3, len(numbers) - 1)])
        if (fields != expected_fields).any() or (fields[kinds == NODE_DECISION] < 5).any():
            raise EntryRejected("knowledge.sdd has a node line with the wrong number of fields")
        vtree_of = np.full(count, -1, dtype=np.int64)
        literal_of = np.zeros(count, dtype=np.int64)
        leaf_of = np.full(len(shape.var_of) + 1, -2, dtype=np.int64)  # variable -> leaf position
        leaf_of[list(shape.leaf_of)] = list(shape.leaf_of.values())
        literal_lines = starts[is_literal_line]
        literals, positions = numbers[literal_lines + 3], numbers[literal_lines + 2]
        magnitude = np.abs(literals)
        if ((magnitude < 1) | (magnitude >= len(leaf_of))).any() or \
                (leaf_of[np.minimum(magnitude, len(leaf_of) - 1)] != positions).any():
            raise EntryRejected("knowledge.sdd has a literal node outside the vtree")
        literal_ids = numbers[literal_lines + 1]
        literal_of[literal_ids], vtree_of[literal_ids] = literals, positions

        decision_lines = starts[kinds == NODE_DECISION]
        decision_ids, decision_vtrees = numbers[decision_lines + 1], numbers[decision_lines + 2]
        left = np.asarray(shape.left, dtype=np.int64)
        right = np.asarray(shape.right, dtype=np.int64)
        if (decision_vtrees >= len(left)).any() or (left[np.minimum(decision_vtrees, len(left) - 1)] < 0).any():
            raise EntryRejected("knowledge.sdd has a decision node on a vtree node that is no branch")
        vtree_of[decision_ids] = decision_vtrees
        # Elements, in file order: token i of a decision line (i >= 4 after the letter) is a
        # prime when i is even, a sub when odd.
        sizes = numbers[decision_lines + 3]
        element_tokens = np.repeat(decision_lines + 4, 2 * sizes) + _ranges(2 * sizes)
        primes, subs = numbers[element_tokens[0::2]], numbers[element_tokens[1::2]]
        parents = np.repeat(decision_ids, sizes)
        if (primes >= count).any() or (subs >= count).any():
            raise EntryRejected("knowledge.sdd refers to an undefined node")
        if ((line_of[primes] >= line_of[parents]) | (line_of[subs] >= line_of[parents])).any():
            raise EntryRejected("knowledge.sdd refers to a node before defining it")
        # libsdd builds a decision node from its elements as they stand when they are normalized
        # for its vtree (primes in the left subtree, subs in the right one), so they must be.
        first, last = np.asarray(shape.first, dtype=np.int64), np.asarray(shape.last, dtype=np.int64)
        parent_vtree = vtree_of[parents]
        prime_vtree, sub_vtree = vtree_of[primes], vtree_of[subs]
        prime_left, sub_right = left[parent_vtree], right[parent_vtree]
        prime_outside = (prime_vtree < first[prime_left]) | (prime_vtree > last[prime_left])
        if ((kind_of[primes] <= NODE_TRUE) | prime_outside).any():
            raise EntryRejected("knowledge.sdd has a prime outside the left vtree of its node")
        sub_is_constant = kind_of[subs] <= NODE_TRUE
        if (~sub_is_constant & ((sub_vtree < first[sub_right]) | (sub_vtree > last[sub_right]))).any():
            raise EntryRejected("knowledge.sdd has a sub outside the right vtree of its node")
        element_end = np.zeros(count, dtype=np.int64)
        element_end[decision_ids] = np.cumsum(sizes)
        element_start = np.zeros(count, dtype=np.int64)
        element_start[decision_ids] = np.cumsum(sizes) - sizes
        return cls(kind_of.tolist(), literal_of.tolist(), vtree_of.tolist(), element_start.tolist(),
                   element_end.tolist(), primes.tolist(), subs.tolist(), ids.tolist())

    @staticmethod
    def _node_lines(data: bytes) -> tuple[int, bytes]:
        """(the header's node count, the node lines after it), in the exact layout libsdd writes:
        letters only at line starts, single spaces, '-' only before a literal's digits."""
        if not data.isascii():
            raise EntryRejected("knowledge.sdd is not ASCII text")
        position = 0
        while data.startswith(b"c", position):  # libsdd's leading comment lines
            position = data.find(b"\n", position) + 1
            if position == 0:
                raise EntryRejected("knowledge.sdd has no 'sdd <count>' header")
        header_end = data.find(b"\n", position)
        header = re.fullmatch(rb"sdd ([0-9]{1,12})", data[position:header_end]) if header_end >= 0 else None
        if header is None:
            raise EntryRejected("knowledge.sdd has no 'sdd <count>' header")
        body = data[header_end + 1:]
        layout_ok = (
            body.endswith(b"\n") and body[:1] in _KIND_LETTERS and body[1:2] == b" "
            and not body.translate(None, b"FTLD0123456789 -\n")
            and all(bad not in body for bad in (b"  ", b" \n", b"\n ", b"\n\n", b"--", b"- ", b"-\n"))
            and body.count(b"-") == body.count(b" -")
            and body.count(b"\n") == 1 + sum(body.count(b"\n" + letter + b" ") for letter in _KIND_LETTERS)
        )
        if not layout_ok:
            raise EntryRejected("knowledge.sdd has a malformed node line")
        return int(header.group(1)), body

    @property
    def size(self) -> int:
        return len(self.primes)

    @property
    def decision_count(self) -> int:
        return self.kind.count(NODE_DECISION)

    def model_counts(self, shape: VtreeShape) -> tuple[int, list]:
        """(exact model count over all variables, each node's count over its own vtree)."""
        counts = [0] * len(self.kind)
        kind, vtree, var_count = self.kind, self.vtree, shape.var_count
        for node in self.order:
            if kind[node] == NODE_LITERAL:
                counts[node] = 1
            elif kind[node] == NODE_DECISION:
                position = vtree[node]
                left, right = shape.left[position], shape.right[position]
                counts[node] = sum(self.count_within(prime, left, counts, shape)
                                   * self.count_within(sub, right, counts, shape)
                                   for prime, sub in self.elements(node))
        return self.count_within(self.root, shape.root, counts, shape), counts

    def count_within(self, node: int, position: int, counts: list, shape: VtreeShape) -> int:
        """Models of `node` over the variables below vtree `position` (which holds the node's vtree)."""
        kind = self.kind[node]
        if kind == NODE_FALSE:
            return 0
        if kind == NODE_TRUE:
            return 1 << shape.var_count[position]
        return counts[node] << (shape.var_count[position] - shape.var_count[self.vtree[node]])

    def satisfiable(self, lanes: int, true_lanes: dict, false_lanes: dict) -> list:
        """node -> bit mask of the lanes (independent partial assignments) in which it has a model.

        `true_lanes[v]` / `false_lanes[v]`: the lanes where literal v may be true / false (a
        variable left free may be both). Exact for a decomposable circuit: a conjunction of
        disjoint-scope parts is satisfiable iff both parts are.
        """
        value = [0] * len(self.kind)
        for node in self.order:
            kind = self.kind[node]
            if kind == NODE_TRUE:
                value[node] = (1 << lanes) - 1
            elif kind == NODE_LITERAL:
                literal = self.literal[node]
                value[node] = true_lanes[literal] if literal > 0 else false_lanes[-literal]
            elif kind == NODE_DECISION:
                mask = 0
                for prime, sub in self.elements(node):
                    mask |= value[prime] & value[sub]
                value[node] = mask
        return value

    def build(self, manager: SddManager) -> SddNode:
        """The SDD the text describes, built with PySDD operations: each decision node is the
        disjunction of its (prime and sub) elements, whatever they are."""
        nodes: list = [None] * len(self.kind)
        for node in self.order:
            kind = self.kind[node]
            if kind == NODE_FALSE:
                nodes[node] = manager.false()
            elif kind == NODE_TRUE:
                nodes[node] = manager.true()
            elif kind == NODE_LITERAL:
                nodes[node] = manager.literal(self.literal[node])
            else:
                result = manager.false()
                for prime, sub in self.elements(node):
                    result = result | (nodes[prime] & nodes[sub])
                nodes[node] = result
        return nodes[self.root]

    def pick_model(self, choose) -> dict:
        """Literal values along one path from the root: `choose(node)` picks an element index.
        Variables the path leaves free are absent from the result."""
        values: dict = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if self.kind[node] == NODE_LITERAL:
                literal = self.literal[node]
                values[abs(literal)] = literal > 0
            elif self.kind[node] == NODE_DECISION:
                element = self.element_start[node] + choose(node)
                stack.extend((self.primes[element], self.subs[element]))
        return values


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for each n in `lengths`, concatenated."""
    total = int(lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)

