"""Compile ground knowledge into an SDD with PySDD, and cache the result on disk.

Each categorical variable X with domain {v1..vd} becomes d indicator literals
"X = vi" plus an exactly-one constraint. Each ground constraint is compiled over its
own small scope (a decision diagram over its table of allowed tuples) and conjoined.
The variable order follows the constraints as written, so a chain of constraints
such as a carry-propagating addition gives a diagram whose size grows linearly.

Compilation runs under a budget (`max_sdd_size`, `max_seconds`): knowledge whose SDD
is exponential (an all-different over many values) stops with a LogicError naming
the constraint, instead of exhausting the memory.

The disk cache (`nesy_gedi.circuit_cache`) trusts nothing it reads back: every file of
an entry and every claim in it is checked against the knowledge before PySDD or KLay
sees it, and anything off rebuilds the entry, with a one-line CacheWarning. KLay then
reads a private copy of the verified bytes, never the shared folder, which another
process may rewrite; PySDD gets the circuit rebuilt from them with its own operations
(see `CompiledKnowledge.sdd`).
"""
from __future__ import annotations

import array
import functools
import hashlib
import json
import random
import shutil
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pysdd.sdd import SddManager, SddNode, Vtree

from .circuit_cache import (CacheWarning, checked_meta, default_cache_dir, read_verified_files, verify_circuit,
                            write_cache_entry)
from .decimal_text import decimal_string, json_safe_count
from .errors import LogicError
from .logic.ground import Knowledge, describe_count, ground
from .logic.syntax import read_logic_file
from .logic.syntax import parse
from .sdd_text import EntryRejected, SddText, VtreeShape

COMPILER_VERSION = "3"  # 3: cache entries carry a manifest of content hashes
VTREE_TYPES = ("blocks", "block-tree", "right", "balanced")  # a left-linear vtree blows up on one-hot tables

# Budget of one compilation; compile_file and compile_knowledge_uncached read these at call
# time when their own max_sdd_size / max_seconds are None, so a caller may lower or raise
# them for a whole run. The SDD manager keeps every node it ever made (automatic garbage
# collection is off), at about 60 bytes per unit of size: 30 million is about 2 GB.
DEFAULT_MAX_SDD_SIZE = 30_000_000
DEFAULT_MAX_SECONDS = 600.0


@dataclass
class CompiledKnowledge:
    """Ground knowledge, its SDD on disk and what the circuit layer needs to feed it."""

    knowledge: Knowledge
    literal_of: dict  # (variable id, domain position) -> SDD variable (1-based)
    num_literals: int
    directory: Path  # the cache entry (or, uncached, a private folder) with knowledge.sdd, .vtree, meta.json
    sdd_size: int
    sdd_node_count: int
    model_count: int
    compile_seconds: float
    cache_hit: bool
    # A private folder holding the verified knowledge.sdd and knowledge.vtree that KLay and
    # sdd() read: a cache entry is shared with other processes, which may rewrite it.
    circuit_files: Path = field(default=None, repr=False)
    _manager: SddManager | None = field(default=None, repr=False)
    _root: SddNode | None = field(default=None, repr=False)

    @property
    def sdd_file(self) -> Path:
        return self.circuit_files / "knowledge.sdd"

    @property
    def vtree_file(self) -> Path:
        return self.circuit_files / "knowledge.vtree"

    def literals(self, variable) -> list:
        return [self.literal_of[(variable.id, p)] for p in range(len(variable.domain))]

    def sdd(self) -> tuple[SddManager, SddNode]:
        """The live PySDD manager and root.

        After a cache hit they are rebuilt from the verified SDD text with PySDD operations,
        never with libsdd's file reader: that reader trusts every decision node to be a
        proper partition, which no cheap check can establish, and crashes when one is not.
        """
        if self._manager is None:
            vtree_text = self.vtree_file.read_text()  # this process's own copy of the verified vtree
            manager = SddManager.from_vtree(Vtree.from_file(str(self.vtree_file).encode()))
            manager.auto_gc_and_minimize_off()
            shape = VtreeShape.parse(vtree_text)
            self._root = SddText.parse(self.sdd_file.read_bytes(), shape).build(manager)
            self._manager = manager
        return self._manager, self._root

    def summary(self) -> dict:
        """A JSON-safe description. `model_count` is exact: an int below 2**53, else a string of digits."""
        k = self.knowledge
        return {
            "logic": k.path,
            "params": dict(k.params),
            "variables": [
                {"name": v.name, "role": v.role, "domain": list(v.domain)} for v in k.variables
            ],
            "concepts": len(k.concepts),
            "labels": len(k.labels),
            "hidden": len(k.hidden),
            "constraints": len(k.constraints),
            "sdd_size": self.sdd_size,
            "sdd_nodes": self.sdd_node_count,
            "model_count": json_safe_count(self.model_count),
            "compile_seconds": round(self.compile_seconds, 4),
            "cache_hit": self.cache_hit,
        }


def require_labels(compiled: CompiledKnowledge) -> None:
    """Raise LogicError unless the knowledge declares a label: without one, training has no
    observation to learn from, and every prediction is trivially "correct"."""
    if not compiled.knowledge.labels:
        raise LogicError("declares no label: nothing to learn from (declare the observed outputs "
                         "with `label`)", compiled.knowledge.path)


# ----------------------------------------------------------------------------- compilation
def variable_order(knowledge: Knowledge) -> list:
    """Variables in order of first mention by a constraint, then the unconstrained ones."""
    seen: dict = {}
    for constraint in knowledge.constraints:
        for variable_id in constraint.scope:
            seen.setdefault(variable_id, None)
    for variable in knowledge.variables:
        seen.setdefault(variable.id, None)
    return list(seen)


def literal_numbering(knowledge: Knowledge) -> dict:
    """(variable id, domain position) -> SDD variable, numbered 1.. in `variable_order`."""
    literal_of: dict = {}
    for variable_id in variable_order(knowledge):
        for position in range(len(knowledge.variables[variable_id].domain)):
            literal_of[(variable_id, position)] = len(literal_of) + 1
    return literal_of


def _value_terms(manager: SddManager, literals: list, check_budget=None) -> list:
    """For each value, the term "this indicator true and every other false".

    Built from running conjunctions of the negative literals from either end, which all
    terms share: d values take 3d SDD operations instead of d * d (a variable may have
    10,000 values), and leave little garbage behind.
    """
    negatives = [manager.literal(-literal) for literal in literals]
    none_before = [manager.true()]  # none_before[i]: no indicator before position i is true
    for negative in negatives[:-1]:
        none_before.append(none_before[-1] & negative)
    none_after = [manager.true()]  # built backwards: then none_after[i] covers positions after i
    for negative in reversed(negatives[1:]):
        none_after.append(none_after[-1] & negative)
    none_after.reverse()
    terms = []
    for position, literal in enumerate(literals):
        terms.append(manager.literal(literal) & none_before[position] & none_after[position])
        if check_budget is not None and position % 256 == 255:
            check_budget()
    return terms


def _block_vtree(blocks: list, path: Path, chain: bool = True) -> Vtree:
    """A right-linear chain of blocks, each block a balanced subtree over its literals.

    The chain follows the constraints' order, which keeps chain-structured knowledge
    (carries) linear in size like an OBDD, while the balanced blocks keep the circuit
    shallow: depth grows with the number of blocks, not of literals. Depth matters
    because every circuit layer is a separate batched torch operation.
    """
    lines, next_id = [], 0

    def leaf(variable: int) -> int:
        nonlocal next_id
        lines.append(f"L {next_id} {variable}")
        next_id += 1
        return next_id - 1

    def internal(left: int, right: int) -> int:
        nonlocal next_id
        lines.append(f"I {next_id} {left} {right}")
        next_id += 1
        return next_id - 1

    def balanced(variables: list) -> int:
        if len(variables) == 1:
            return leaf(variables[0])
        middle = len(variables) // 2
        return internal(balanced(variables[:middle]), balanced(variables[middle:]))

    def tree_of(subtrees: list) -> int:
        if len(subtrees) == 1:
            return subtrees[0]
        middle = len(subtrees) // 2
        return internal(tree_of(subtrees[:middle]), tree_of(subtrees[middle:]))

    subtrees = [balanced(block) for block in blocks]
    if chain:
        root = subtrees[-1]
        for subtree in reversed(subtrees[:-1]):
            root = internal(subtree, root)
    else:
        root = tree_of(subtrees)
    path.write_text(f"vtree {next_id}\n" + "\n".join(lines) + "\n")
    return Vtree.from_file(str(path).encode())


def _build_vtree(knowledge: Knowledge, literal_of: dict, vtree_type: str) -> Vtree:
    num_literals = len(literal_of)
    if vtree_type not in ("blocks", "block-tree"):
        return Vtree(var_count=num_literals, var_order=list(range(1, num_literals + 1)), vtree_type=vtree_type)
    blocks, placed = [], set()
    for constraint in knowledge.constraints:
        block = [v for v in constraint.scope if v not in placed]
        placed.update(block)
        if block:
            blocks.append([literal_of[(v, p)] for v in block for p in range(len(knowledge.variables[v].domain))])
    blocks.extend([literal_of[(v.id, p)] for p in range(len(v.domain))]
                  for v in knowledge.variables if v.id not in placed)
    with tempfile.TemporaryDirectory() as scratch:
        return _block_vtree(blocks, Path(scratch) / "blocks.vtree", chain=vtree_type == "blocks")


def _exactly_one(manager: SddManager, literals: list, check_budget=None) -> SddNode:
    result = manager.false()
    for position, term in enumerate(_value_terms(manager, literals, check_budget)):
        result = result | term
        if check_budget is not None and position % 256 == 255:
            check_budget()
    return result


class _Budget:
    """The size and time a compilation may use, checked between SDD operations.

    A single PySDD operation cannot be interrupted, but the SDD grows over many of them
    (one per table row group, one per conjunction), so checking in between stops a
    runaway compilation long before the memory runs out.
    """

    def __init__(self, path: str, max_sdd_size: int | None, max_seconds: float | None):
        self.path = path
        self.max_sdd_size = DEFAULT_MAX_SDD_SIZE if max_sdd_size is None else max_sdd_size
        self.max_seconds = DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds
        if not self.max_sdd_size > 0 or not self.max_seconds > 0:
            raise ValueError(f"the compilation budget must be positive (max_sdd_size={self.max_sdd_size}, "
                             f"max_seconds={self.max_seconds})")
        self.deadline = time.monotonic() + self.max_seconds

    def check(self, manager: SddManager, where) -> None:
        """Raise LogicError(path:line) when over budget. `where()` gives (what was being done,
        line): it is only worked out when the budget is exceeded."""
        size = manager.size()  # live and dead nodes: all of them hold memory
        if size > self.max_sdd_size:
            doing, line = where()
            raise LogicError(
                f"the circuit outgrows its budget while {doing}: the SDD manager holds {size} nodes, more "
                f"than max_sdd_size={self.max_sdd_size} (pass a larger max_sdd_size to compile_file or set "
                f"nesy_gedi.compiler.DEFAULT_MAX_SDD_SIZE; or restate the knowledge, e.g. with hidden "
                f"variables, so that its SDD stays small)", self.path, line)
        if time.monotonic() > self.deadline:
            doing, line = where()
            raise LogicError(
                f"compilation takes longer than its budget of max_seconds={self.max_seconds:g} s while "
                f"{doing} (pass a larger max_seconds to compile_file or set "
                f"nesy_gedi.compiler.DEFAULT_MAX_SECONDS)", self.path, line)


def _table_sdd(manager: SddManager, literal_columns: list, rows: np.ndarray, on_progress=None) -> SddNode:
    """The disjunction of the allowed rows, shared as a multi-valued decision diagram.

    Each value is the full term "X = v and X != every other value": with positive
    indicators alone the function would be a large monotone one (millions of nodes
    for one addition column). The result therefore also implies exactly-one for
    every variable in the scope. The diagram is built from the dense table of the
    scope, one column at a time, with equal sub-tables shared. `on_progress` (if
    given) is called every few hundred sub-tables, to enforce a budget.
    """
    terms = [_value_terms(manager, literals, on_progress) for literals in literal_columns]
    sizes = tuple(len(literals) for literals in literal_columns)
    table = np.zeros(sizes, dtype=bool)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, len(sizes))
    table[tuple(rows.T)] = True
    memo: dict = {}

    def build(column: int, sub: np.ndarray) -> SddNode:
        if column == len(sizes):
            return manager.true()
        key = (column, sub.tobytes())
        if key in memo:
            return memo[key]
        if on_progress is not None and len(memo) % 256 == 255:
            on_progress()
        result = manager.false()
        occupied = sub.reshape(sizes[column], -1).any(axis=1)  # one pass, not one per value
        for position in np.flatnonzero(occupied).tolist():
            result = result | (terms[column][position] & build(column + 1, sub[position]))
        memo[key] = result
        return result

    return build(0, table)


def exact_model_count(manager: SddManager, root: SddNode) -> int:
    """Model count over all manager variables with Python integers.

    PySDD's own counter uses 64-bit integers and wraps around beyond 2**64 (N-digit
    addition has 10**(2N) models), so the count is recomputed exactly here.
    """
    counts: dict = {}

    def within(node: SddNode, vtree_size: int) -> int:
        if node.is_false():
            return 0
        if node.is_true():
            return 2**vtree_size
        own = 1 if node.is_literal() else counts[node.id]
        return own * 2 ** (vtree_size - node.vtree().var_count())

    # Iterative post-order: chain-shaped diagrams are deeper than Python's recursion limit.
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if not node.is_decision() or node.id in counts:
            continue
        elements = node.elements()
        if not expanded:
            stack.append((node, True))
            stack.extend((child, False) for pair in elements for child in pair)
            continue
        vtree = node.vtree()
        left, right = vtree.left().var_count(), vtree.right().var_count()
        counts[node.id] = sum(within(p, left) * within(s, right) for p, s in elements)
    return within(root, manager.var_count())


def _check_labels_are_functions(knowledge, manager, root, literal_of, budget: _Budget | None = None) -> None:
    """Every label must be determined by the concepts: count before and after projecting it away."""
    hidden_and_labels = [v for v in knowledge.variables if v.role in ("label", "hidden")]
    if not knowledge.labels:
        return

    def projected_count(quantified: list) -> int:
        exists_map = array.array("i", [0] * (manager.var_count() + 1))
        booleans = 0
        for variable in quantified:
            for position in range(len(variable.domain)):
                exists_map[literal_of[(variable.id, position)]] = 1
                booleans += 1
        projected = manager.exists_multiple(exists_map, root)
        if budget is not None:
            budget.check(manager, lambda: ("checking that the labels are functions of the concepts",
                                           knowledge.labels[0].line))
        return exact_model_count(manager, projected) // 2**booleans

    concept_tuples = projected_count(hidden_and_labels)
    # All labels together are a function of the concepts iff each one is: one check in the
    # common case, then one per label only to name the culprit.
    if projected_count([v for v in hidden_and_labels if v.role == "hidden"]) == concept_tuples:
        return
    for label in knowledge.labels:
        others = [v for v in hidden_and_labels if v.id != label.id]
        with_label = projected_count(others)
        if with_label != concept_tuples:
            raise LogicError(
                f"label {label.name} is not a function of the concepts: some concept assignment "
                f"allows several values of it ({describe_count(with_label)} concept/label combinations for "
                f"{describe_count(concept_tuples)} concept assignments)", knowledge.path, label.line)


@dataclass(frozen=True)
class _Part:
    """What one conjunct comes from, for error messages: a constraint or a variable declaration."""
    line: int
    what: str


def _conjoin_bottom_up(pieces: list, parts: list, budget: _Budget, manager: SddManager) -> tuple:
    """The conjunction of `pieces`, conjoined from the last to the first: (root, index).

    The blocks vtree places the variables of later constraints deeper down its right-linear
    chain. Conjoining first to last would redo the whole path down to the newest constraint
    at every step, quadratic in time and (garbage collection being off) in memory for a
    long chain of constraints; from the bottom up, each step only touches the top of what
    is already built. `index` is None, or the piece with which the conjunction became false.
    """
    root = manager.true()
    for index in reversed(range(len(pieces))):
        root = pieces[index] & root
        budget.check(manager, lambda: (f"conjoining {parts[index].what} with the {len(pieces) - 1 - index} "
                                       f"constraints after it", parts[index].line))
        if root.is_false():
            return root, index
    return root, None


def compile_knowledge_uncached(knowledge: Knowledge, vtree_type: str = "blocks", *,
                               max_sdd_size: int | None = None, max_seconds: float | None = None) -> tuple:
    """(manager, root, literal_of, num_literals, model_count) for ground knowledge.

    Raises LogicError for unsatisfiable knowledge (at the first constraint that makes it
    so), labels that are not functions of the concepts, and a compilation that exceeds
    its budget (None: DEFAULT_MAX_SDD_SIZE nodes, DEFAULT_MAX_SECONDS seconds).
    """
    if vtree_type not in VTREE_TYPES:
        raise LogicError(f"unknown vtree type {vtree_type!r} (choose from {', '.join(VTREE_TYPES)})")
    if not knowledge.variables:
        raise LogicError("the knowledge declares no variable", knowledge.path)
    budget = _Budget(knowledge.path, max_sdd_size, max_seconds)
    literal_of = literal_numbering(knowledge)
    num_literals = len(literal_of)
    manager = SddManager.from_vtree(_build_vtree(knowledge, literal_of, vtree_type))
    manager.auto_gc_and_minimize_off()

    def literals(variable_id: int) -> list:
        return [literal_of[(variable_id, p)] for p in range(len(knowledge.variables[variable_id].domain))]

    pieces, parts = [], []
    for constraint in knowledge.constraints:
        part = _Part(constraint.line, f"the constraint `{constraint.text}`")
        parts.append(part)

        def where(part=part):
            return f"compiling the table of {part.what}", part.line

        check_budget = functools.partial(budget.check, manager, where)
        pieces.append(_table_sdd(manager, [literals(i) for i in constraint.scope], constraint.allowed,
                                 check_budget))
        check_budget()
    constrained = {v for constraint in knowledge.constraints for v in constraint.scope}
    for variable in knowledge.variables:
        if variable.id not in constrained:
            part = _Part(variable.line, f"the declaration of {variable.name}")
            check_budget = functools.partial(budget.check, manager, lambda part=part: (f"compiling {part.what}",
                                                                                         part.line))
            pieces.append(_exactly_one(manager, literals(variable.id), check_budget))
            parts.append(part)
            check_budget()
    root, false_from = _conjoin_bottom_up(pieces, parts, budget, manager)
    if false_from is not None:
        first = _first_unsatisfiable(pieces, parts, budget, manager)
        raise LogicError("the knowledge is unsatisfiable: no assignment satisfies this constraint "
                         "together with the ones before it", knowledge.path, parts[first].line)
    model_count = exact_model_count(manager, root)
    _check_labels_are_functions(knowledge, manager, root, literal_of, budget)
    return manager, root, literal_of, num_literals, model_count


def _first_unsatisfiable(pieces: list, parts: list, budget: _Budget, manager: SddManager) -> int:
    """The smallest i such that pieces[0..i] conjoin to false, all of them doing so: the error
    names the first constraint that is unsatisfiable together with the ones before it.
    Binary search over prefixes (the conjunction ran bottom-up, so it only knows a suffix)."""
    low, high = 0, len(pieces) - 1  # pieces[:high + 1] is unsatisfiable
    while low < high:
        middle = (low + high) // 2
        root, _ = _conjoin_bottom_up(pieces[:middle + 1], parts, budget, manager)
        if root.is_false():
            high = middle
        else:
            low = middle + 1
    return low


# ----------------------------------------------------------------------------- disk cache
def cache_key(text: str, params: dict, vtree_type: str) -> str:
    payload = json.dumps({"text": text, "params": params, "vtree": vtree_type, "version": COMPILER_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def compile_file(path: str | Path, params: dict | None = None, vtree_type: str = "blocks",
                 cache_dir: str | Path | None = None, use_cache: bool = True, *,
                 max_sdd_size: int | None = None, max_seconds: float | None = None) -> CompiledKnowledge:
    """Parse, ground and compile a logic file; reuse the on-disk SDD when file and parameters match
    and the cached entry passes verification (otherwise it is rebuilt, with a CacheWarning).

    `max_sdd_size` (SDD nodes held by the manager) and `max_seconds` bound the compilation;
    None means DEFAULT_MAX_SDD_SIZE / DEFAULT_MAX_SECONDS. Exceeding either raises
    LogicError at the constraint being compiled. With use_cache=False the SDD files go to a
    private temporary folder. Private folders are removed when the returned object is
    garbage-collected.
    """
    if vtree_type not in VTREE_TYPES:
        raise LogicError(f"unknown vtree type {vtree_type!r} (choose from {', '.join(VTREE_TYPES)})", str(path))
    text = read_logic_file(path)
    knowledge = ground(parse(text, str(path)), params)
    key = cache_key(text, knowledge.params, vtree_type)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if use_cache:
        entry = cache_root / key
        try:
            return _load_verified_entry(entry, key, knowledge, vtree_type)
        except FileNotFoundError:
            pass  # a plain cache miss
        except EntryRejected as reason:
            warnings.warn(f"circuit cache entry {entry} failed verification ({reason}); recompiling {path}",
                          CacheWarning, stacklevel=2)

    start = time.perf_counter()
    manager, root, literal_of, num_literals, model_count = compile_knowledge_uncached(
        knowledge, vtree_type, max_sdd_size=max_sdd_size, max_seconds=max_seconds)
    seconds = time.perf_counter() - start
    circuit_files = _private_folder()
    root.save(str(circuit_files / "knowledge.sdd").encode())
    manager.vtree().save(str(circuit_files / "knowledge.vtree").encode())
    meta = {
        "key": key,
        "literals": [[v, p, lit] for (v, p), lit in literal_of.items()],
        "num_literals": num_literals,
        "sdd_size": root.size(),
        "sdd_node_count": root.count(),
        "model_count": decimal_string(model_count),
        "compile_seconds": seconds,
        "params": knowledge.params,
        "logic": str(path),
    }
    contents = {"knowledge.sdd": (circuit_files / "knowledge.sdd").read_bytes(),
                "knowledge.vtree": (circuit_files / "knowledge.vtree").read_bytes(),
                "meta.json": json.dumps(meta).encode()}
    directory = circuit_files
    if use_cache:
        try:
            directory = write_cache_entry(cache_root, key, contents)
        except OSError as error:
            warnings.warn(f"cannot write the circuit cache in {cache_root} ({error}); compiling without it",
                          stacklevel=2)
    if directory == circuit_files:
        (circuit_files / "meta.json").write_bytes(contents["meta.json"])
    compiled = CompiledKnowledge(knowledge, literal_of, num_literals, directory, meta["sdd_size"],
                                 meta["sdd_node_count"], model_count, seconds, False, circuit_files,
                                 manager, root)
    weakref.finalize(compiled, shutil.rmtree, str(circuit_files), True)
    return compiled


def _private_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="nesy-gedi-sdd-"))  # mode 0700: this process's alone


def _load_verified_entry(directory: Path, key: str, knowledge: Knowledge, vtree_type: str) -> CompiledKnowledge:
    """A cache hit whose every file and claim was checked; EntryRejected saying what was off."""
    contents = read_verified_files(directory, key)
    literal_of = literal_numbering(knowledge)
    meta = checked_meta(contents["meta.json"], key, literal_of)
    circuit_files = _private_folder()
    try:
        # The vtree is a function of the knowledge: build it afresh and demand the same bytes
        # (as a manager writes it: a manager numbers the nodes by in-order position).
        manager = SddManager.from_vtree(_build_vtree(knowledge, literal_of, vtree_type))
        manager.vtree().save(str(circuit_files / "knowledge.vtree").encode())
        expected_vtree = (circuit_files / "knowledge.vtree").read_bytes()
        model_count = verify_circuit(contents, expected_vtree, knowledge, literal_of, meta, random.Random(key))
        (circuit_files / "knowledge.sdd").write_bytes(contents["knowledge.sdd"])
    except BaseException:
        shutil.rmtree(circuit_files, ignore_errors=True)
        raise
    compiled = CompiledKnowledge(knowledge, literal_of, len(literal_of), directory, meta["sdd_size"],
                                 meta["sdd_node_count"], model_count, float(meta["compile_seconds"]), True,
                                 circuit_files)
    weakref.finalize(compiled, shutil.rmtree, str(circuit_files), True)
    return compiled
