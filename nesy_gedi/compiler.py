"""Compile ground knowledge into an SDD with PySDD, and cache the result on disk.

Each categorical variable X with domain {v1..vd} becomes d indicator literals
"X = vi" plus an exactly-one constraint. Each ground constraint is compiled over its
own small scope (a decision diagram over its table of allowed tuples) and conjoined.
The variable order follows the constraints as written, so a chain of constraints
such as a carry-propagating addition gives a diagram whose size grows linearly.

Compilation runs under a budget (`max_sdd_size`, `max_seconds`): knowledge whose SDD
is exponential (an all-different over many values) stops with a LogicError naming
the constraint, instead of exhausting the memory.

The disk cache trusts nothing it reads back. An entry is a folder holding
knowledge.sdd, knowledge.vtree, meta.json and manifest.json (the sha256 and size of
the other three). Before PySDD or KLay sees a cached file, its hash is checked, the
vtree is compared with the one the knowledge implies, the SDD text is checked line
by line against that vtree (ids, children, literals, vtree nodes: everything that
libsdd and KLay index without checking), and the circuit is checked against the
knowledge: model count, sampled models and random concept assignments against the
constraint tables (see `_verify_cached_circuit`). Anything off rebuilds the entry,
with a one-line CacheWarning. KLay then reads a private copy of the verified bytes,
never the shared folder, which another process may rewrite; PySDD gets the circuit
rebuilt from them with its own operations (see `CompiledKnowledge.sdd`).
"""
from __future__ import annotations

import array
import bisect
import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import stat
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pysdd.sdd import SddManager, SddNode, Vtree

from .errors import LogicError
from .logic.ground import BruteForce, Knowledge, SearchLimitExceeded, describe_count, ground, read_logic_file
from .logic.syntax import parse

COMPILER_VERSION = "3"  # 3: cache entries carry a manifest of content hashes
VTREE_TYPES = ("blocks", "right", "balanced")  # a left-linear vtree blows up on one-hot tables

# Budget of one compilation; compile_file and compile_knowledge_uncached read these at call
# time when their own max_sdd_size / max_seconds are None, so a caller may lower or raise
# them for a whole run. The SDD manager keeps every node it ever made (automatic garbage
# collection is off), at about 60 bytes per unit of size: 30 million is about 2 GB.
DEFAULT_MAX_SDD_SIZE = 30_000_000
DEFAULT_MAX_SECONDS = 600.0

# Model counts up to this are JSON integers in summary(); larger ones are decimal strings,
# because many JSON readers hold numbers as doubles (exact only below 2**53).
JSON_SAFE_INTEGER = 2**53


class CacheWarning(UserWarning):
    """A circuit cache entry failed verification and is rebuilt."""


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
            shape = _VtreeShape.parse(vtree_text)
            self._root = _SddText.parse(self.sdd_file.read_bytes(), shape).build(manager)
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


# ----------------------------------------------------------------------------- exact big integers as text
# Python refuses int <-> decimal conversions beyond 4300 digits (a guard against
# quadratic-time conversions of untrusted input); model counts exceed that easily
# (4400 digits have 10**4400 models). These convert in pieces below the limit.
_DIGITS_PER_PIECE = 4000


def decimal_string(number: int) -> str:
    """The decimal digits of an integer of any size."""
    if number < 0:
        return "-" + decimal_string(-number)
    if number < 10**_DIGITS_PER_PIECE:
        return str(number)
    powers = [10**_DIGITS_PER_PIECE]  # powers[i] = 10**(piece * 2**i)
    while powers[-1] <= number:
        powers.append(powers[-1] * powers[-1])

    def digits(value: int, level: int) -> str:  # value < powers[level], zero-padded
        if level == 0:
            return str(value).zfill(_DIGITS_PER_PIECE)
        high, low = divmod(value, powers[level - 1])
        return digits(high, level - 1) + digits(low, level - 1)

    return digits(number, len(powers) - 1).lstrip("0") or "0"


def parse_decimal(text: str) -> int:
    """The integer written as decimal digits (any number of them); ValueError otherwise."""
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"not a string of decimal digits: {text[:40]!r}")
    if len(text) <= _DIGITS_PER_PIECE:
        return int(text)
    half = len(text) // 2
    return parse_decimal(text[:-half]) * 10**half + parse_decimal(text[-half:])


def json_safe_count(count: int) -> int | str:
    """A model count for JSON: the int itself below 2**53, else its decimal digits as a string."""
    return count if count < JSON_SAFE_INTEGER else decimal_string(count)


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


def _block_vtree(blocks: list, path: Path) -> Vtree:
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

    subtrees = [balanced(block) for block in blocks]
    root = subtrees[-1]
    for subtree in reversed(subtrees[:-1]):
        root = internal(subtree, root)
    path.write_text(f"vtree {next_id}\n" + "\n".join(lines) + "\n")
    return Vtree.from_file(str(path).encode())


def _build_vtree(knowledge: Knowledge, literal_of: dict, vtree_type: str) -> Vtree:
    num_literals = len(literal_of)
    if vtree_type != "blocks":
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
        return _block_vtree(blocks, Path(scratch) / "blocks.vtree")


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
        for position in range(sizes[column]):
            part = sub[position]
            if part.any():
                result = result | (terms[column][position] & build(column + 1, part))
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
CACHED_FILES = ("knowledge.sdd", "knowledge.vtree", "meta.json")
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 16
MAX_CACHED_FILE_BYTES = 1 << 32
_SAMPLES = 16  # models drawn from a cached circuit, and random concept assignments, checked
_SAMPLED_LITERALS = 100_000  # ... fewer for large circuits: each sample assigns every literal
_MAX_ENUMERATED_ASSIGNMENTS = 1 << 18  # the knowledge's own model count is enumerated below this
_MAX_CHECKED_MODELS = 1 << 12  # ... and each of its models checked against the circuit below this
_MAX_SEARCH_STEPS = 20_000  # per concept assignment, to complete it from the tables alone
_UNDECIDED = "undecided"  # the search for a completion gave up


class _EntryRejected(Exception):
    """A cache entry that cannot be trusted; the message says why, in a few words."""


def default_cache_dir() -> Path:
    if "NESY_GEDI_CACHE" in os.environ:
        return Path(os.environ["NESY_GEDI_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nesy-gedi" / "circuits"


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
        except _EntryRejected as reason:
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
            directory = _write_cache_entry(cache_root, key, contents)
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


# ----------------------------------------------------------------------------- reading and verifying an entry
def _read_regular_file(path: Path, max_bytes: int, expected_bytes: int | None = None) -> bytes:
    """The bytes of a plain file of at most `max_bytes` (and exactly `expected_bytes`, if given).

    Opened without blocking and checked with fstat, so a FIFO or device planted in the
    entry is refused rather than waited on or read forever.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise  # the caller tells a missing entry (a cache miss) from a missing file
    except OSError as error:
        raise _EntryRejected(f"cannot open {path.name}: {error.strerror or error}") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _EntryRejected(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise _EntryRejected(f"{path.name} has {info.st_size} bytes, more than {max_bytes}")
        if expected_bytes is not None and info.st_size != expected_bytes:
            raise _EntryRejected(f"{path.name} has {info.st_size} bytes, the manifest says {expected_bytes}")
        data = file.read(info.st_size + 1)  # one byte more reveals a file that grows meanwhile
    if len(data) != info.st_size:
        raise _EntryRejected(f"{path.name} changed while it was read")
    return data


def _read_verified_files(directory: Path, key: str) -> dict:
    """name -> bytes of the entry's files, each matching the size and sha256 in the manifest.

    FileNotFoundError when there is no entry at all (a plain cache miss).
    """
    if not directory.exists():
        raise FileNotFoundError(directory)
    try:
        manifest = json.loads(_read_regular_file(directory / MANIFEST, MAX_MANIFEST_BYTES))
    except FileNotFoundError:
        raise _EntryRejected(f"{MANIFEST} is missing") from None
    except (ValueError, RecursionError):
        raise _EntryRejected(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        raise _EntryRejected(f"{MANIFEST} belongs to another entry")
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or sorted(recorded) != sorted(CACHED_FILES):
        raise _EntryRejected(f"{MANIFEST} does not list {', '.join(CACHED_FILES)}")
    contents = {}
    for name in CACHED_FILES:
        entry = recorded[name]
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and type(entry.get("bytes")) is int and entry["bytes"] >= 0):
            raise _EntryRejected(f"{MANIFEST} has a malformed record for {name}")
        try:
            data = _read_regular_file(directory / name, MAX_CACHED_FILE_BYTES, entry["bytes"])
        except FileNotFoundError:
            raise _EntryRejected(f"{name} is missing") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise _EntryRejected(f"{name} does not match its sha256 in {MANIFEST}")
        contents[name] = data
    return contents


def _manifest(key: str, contents: dict) -> bytes:
    files = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
             for name, data in contents.items()}
    return json.dumps({"key": key, "files": files}, indent=1, sort_keys=True).encode()


def _checked_meta(data: bytes, key: str, literal_of: dict) -> dict:
    """meta.json, with every field of the expected type and the literal numbering the knowledge implies."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        raise _EntryRejected("meta.json is not JSON") from None
    if not isinstance(meta, dict):
        raise _EntryRejected("meta.json is not an object")
    if meta.get("key") != key:
        raise _EntryRejected("meta.json belongs to another entry")
    expected_literals = [[v, p, lit] for (v, p), lit in literal_of.items()]
    if meta.get("literals") != expected_literals:
        raise _EntryRejected("the literal numbering in meta.json is not the knowledge's")
    if meta.get("num_literals") != len(literal_of):
        raise _EntryRejected("num_literals in meta.json is not the knowledge's")
    for name in ("sdd_size", "sdd_node_count"):
        if type(meta.get(name)) is not int or meta[name] < 0:
            raise _EntryRejected(f"{name} in meta.json is not a count")
    seconds = meta.get("compile_seconds")
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0:
        raise _EntryRejected("compile_seconds in meta.json is not a duration")
    count = meta.get("model_count")
    if not (isinstance(count, str) and re.fullmatch(r"[0-9]+", count)):
        raise _EntryRejected("model_count in meta.json is not a string of digits")
    meta["model_count"] = parse_decimal(count)
    return meta


@dataclass
class _VtreeShape:
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
    def parse(cls, text: str) -> _VtreeShape:
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
class _SddText:
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
    def parse(cls, data: bytes, shape: _VtreeShape) -> _SddText:
        """Checked with whole-file and numpy operations: an SDD file has millions of lines."""
        count, body = cls._node_lines(data)
        lines = body.count(b"\n")
        if len(body) - len(body.translate(None, b"FTLD")) != lines:  # a letter in mid-line
            raise _EntryRejected("knowledge.sdd has a malformed node line")
        if count != lines:
            raise _EntryRejected(f"knowledge.sdd claims {count} nodes but has {lines}")
        text = body
        for letter, kind in _KIND_LETTERS.items():
            text = text.replace(letter, b"-%d" % (_KIND_MARK + kind))
        numbers = np.fromstring(text, dtype=np.int64, sep=" ")
        if len(numbers) != body.count(b" ") + count:  # single spaces, one node per line: tokens = spaces + lines
            raise _EntryRejected("knowledge.sdd has a malformed node line")
        is_start = numbers <= -_KIND_MARK
        starts = np.flatnonzero(is_start)
        # A number of 13 digits or more (they saturate at 2**63) is refused: libsdd would read another.
        if len(starts) != count or starts[0] != 0 or (np.abs(numbers[~is_start]) >= 10**12).any():
            raise _EntryRejected("knowledge.sdd has a malformed node line")
        kinds = -numbers[starts] - _KIND_MARK
        fields = np.diff(np.append(starts, len(numbers))) - 1  # numbers after the kind letter
        ids = numbers[starts + 1]
        if ids.min() < 0 or ids.max() >= count or np.bincount(ids, minlength=count).max() != 1:
            raise _EntryRejected("knowledge.sdd has a node id out of range or repeated")
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
            raise _EntryRejected("knowledge.sdd has a negative number where a count or id belongs")

        expected_fields = np.select([kinds <= NODE_TRUE, is_literal_line], [1, 3],
                                    3 + 2 * numbers[np.minimum(starts + 3, len(numbers) - 1)])
        if (fields != expected_fields).any() or (fields[kinds == NODE_DECISION] < 5).any():
            raise _EntryRejected("knowledge.sdd has a node line with the wrong number of fields")
        vtree_of = np.full(count, -1, dtype=np.int64)
        literal_of = np.zeros(count, dtype=np.int64)
        leaf_of = np.full(len(shape.var_of) + 1, -2, dtype=np.int64)  # variable -> leaf position
        leaf_of[list(shape.leaf_of)] = list(shape.leaf_of.values())
        literal_lines = starts[is_literal_line]
        literals, positions = numbers[literal_lines + 3], numbers[literal_lines + 2]
        magnitude = np.abs(literals)
        if ((magnitude < 1) | (magnitude >= len(leaf_of))).any() or \
                (leaf_of[np.minimum(magnitude, len(leaf_of) - 1)] != positions).any():
            raise _EntryRejected("knowledge.sdd has a literal node outside the vtree")
        literal_ids = numbers[literal_lines + 1]
        literal_of[literal_ids], vtree_of[literal_ids] = literals, positions

        decision_lines = starts[kinds == NODE_DECISION]
        decision_ids, decision_vtrees = numbers[decision_lines + 1], numbers[decision_lines + 2]
        left = np.asarray(shape.left, dtype=np.int64)
        right = np.asarray(shape.right, dtype=np.int64)
        if (decision_vtrees >= len(left)).any() or (left[np.minimum(decision_vtrees, len(left) - 1)] < 0).any():
            raise _EntryRejected("knowledge.sdd has a decision node on a vtree node that is no branch")
        vtree_of[decision_ids] = decision_vtrees
        # Elements, in file order: token i of a decision line (i >= 4 after the letter) is a
        # prime when i is even, a sub when odd.
        sizes = numbers[decision_lines + 3]
        element_tokens = np.repeat(decision_lines + 4, 2 * sizes) + _ranges(2 * sizes)
        primes, subs = numbers[element_tokens[0::2]], numbers[element_tokens[1::2]]
        parents = np.repeat(decision_ids, sizes)
        if (primes >= count).any() or (subs >= count).any():
            raise _EntryRejected("knowledge.sdd refers to an undefined node")
        if ((line_of[primes] >= line_of[parents]) | (line_of[subs] >= line_of[parents])).any():
            raise _EntryRejected("knowledge.sdd refers to a node before defining it")
        # libsdd builds a decision node from its elements as they stand when they are normalized
        # for its vtree (primes in the left subtree, subs in the right one), so they must be.
        first, last = np.asarray(shape.first, dtype=np.int64), np.asarray(shape.last, dtype=np.int64)
        parent_vtree = vtree_of[parents]
        prime_vtree, sub_vtree = vtree_of[primes], vtree_of[subs]
        prime_left, sub_right = left[parent_vtree], right[parent_vtree]
        prime_outside = (prime_vtree < first[prime_left]) | (prime_vtree > last[prime_left])
        if ((kind_of[primes] <= NODE_TRUE) | prime_outside).any():
            raise _EntryRejected("knowledge.sdd has a prime outside the left vtree of its node")
        sub_is_constant = kind_of[subs] <= NODE_TRUE
        if (~sub_is_constant & ((sub_vtree < first[sub_right]) | (sub_vtree > last[sub_right]))).any():
            raise _EntryRejected("knowledge.sdd has a sub outside the right vtree of its node")
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
            raise _EntryRejected("knowledge.sdd is not ASCII text")
        position = 0
        while data.startswith(b"c", position):  # libsdd's leading comment lines
            position = data.find(b"\n", position) + 1
            if position == 0:
                raise _EntryRejected("knowledge.sdd has no 'sdd <count>' header")
        header_end = data.find(b"\n", position)
        header = re.fullmatch(rb"sdd ([0-9]{1,12})", data[position:header_end]) if header_end >= 0 else None
        if header is None:
            raise _EntryRejected("knowledge.sdd has no 'sdd <count>' header")
        body = data[header_end + 1:]
        layout_ok = (
            body.endswith(b"\n") and body[:1] in _KIND_LETTERS and body[1:2] == b" "
            and not body.translate(None, b"FTLD0123456789 -\n")
            and all(bad not in body for bad in (b"  ", b" \n", b"\n ", b"\n\n", b"--", b"- ", b"-\n"))
            and body.count(b"-") == body.count(b" -")
            and body.count(b"\n") == 1 + sum(body.count(b"\n" + letter + b" ") for letter in _KIND_LETTERS)
        )
        if not layout_ok:
            raise _EntryRejected("knowledge.sdd has a malformed node line")
        return int(header.group(1)), body

    @property
    def size(self) -> int:
        return len(self.primes)

    @property
    def decision_count(self) -> int:
        return self.kind.count(NODE_DECISION)

    def model_counts(self, shape: _VtreeShape) -> tuple[int, list]:
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

    def count_within(self, node: int, position: int, counts: list, shape: _VtreeShape) -> int:
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


def _load_verified_entry(directory: Path, key: str, knowledge: Knowledge, vtree_type: str) -> CompiledKnowledge:
    """A cache hit whose every file and claim was checked; _EntryRejected saying what was off."""
    contents = _read_verified_files(directory, key)
    literal_of = literal_numbering(knowledge)
    meta = _checked_meta(contents["meta.json"], key, literal_of)
    circuit_files = _private_folder()
    try:
        # The vtree is a function of the knowledge: build it afresh and demand the same bytes
        # (as a manager writes it: a manager numbers the nodes by in-order position).
        manager = SddManager.from_vtree(_build_vtree(knowledge, literal_of, vtree_type))
        manager.vtree().save(str(circuit_files / "knowledge.vtree").encode())
        expected_vtree = (circuit_files / "knowledge.vtree").read_bytes()
        if contents["knowledge.vtree"] != expected_vtree:
            raise _EntryRejected("knowledge.vtree is not the vtree of this knowledge")
        shape = _VtreeShape.parse(expected_vtree.decode("ascii"))
        try:
            sdd = _SddText.parse(contents["knowledge.sdd"], shape)
            model_count = _verify_cached_circuit(sdd, shape, knowledge, literal_of, meta, random.Random(key))
        except (ArithmeticError, LookupError, TypeError, ValueError) as error:
            # Damage that the checks did not foresee: still a reason to rebuild, not to crash.
            raise _EntryRejected(f"checking the SDD failed with {type(error).__name__}") from None
        (circuit_files / "knowledge.sdd").write_bytes(contents["knowledge.sdd"])
    except BaseException:
        shutil.rmtree(circuit_files, ignore_errors=True)
        raise
    compiled = CompiledKnowledge(knowledge, literal_of, len(literal_of), directory, meta["sdd_size"],
                                 meta["sdd_node_count"], model_count, float(meta["compile_seconds"]), True,
                                 circuit_files)
    weakref.finalize(compiled, shutil.rmtree, str(circuit_files), True)
    return compiled


def _verify_cached_circuit(sdd: _SddText, shape: _VtreeShape, knowledge: Knowledge, literal_of: dict,
                           meta: dict, rng: random.Random) -> int:
    """Check a structurally sound cached SDD against the knowledge; its exact model count.

    * sizes and the model count recomputed from the file equal meta.json's, and the count
      equals the knowledge's own (by enumeration) when its joint space is small;
    * when the knowledge has few models, each one is a model of the circuit: with equal
      counts, circuit and knowledge are then the same function (a complete check);
    * models drawn uniformly from the circuit are one-hot and satisfy every constraint table;
    * for random concept assignments, the circuit has a completion exactly when a search
      over the tables finds one; the circuit's completion satisfies the tables, and the
      search's completion is a model of the circuit.
    """
    if (sdd.size, sdd.decision_count) != (meta["sdd_size"], meta["sdd_node_count"]):
        raise _EntryRejected("the SDD's size is not the one in meta.json")
    model_count, counts = sdd.model_counts(shape)
    if model_count != meta["model_count"]:
        raise _EntryRejected("the SDD's model count is not the one in meta.json")
    if model_count == 0:
        raise _EntryRejected("the SDD has no model")  # unsatisfiable knowledge is never cached
    brute_force = BruteForce(knowledge)
    expected = brute_force.count_models(_MAX_ENUMERATED_ASSIGNMENTS)
    if expected is not None and expected != model_count:
        raise _EntryRejected(f"the SDD has {describe_count(model_count)} models, "
                             f"the knowledge {describe_count(expected)}")
    decode = _Decoder(knowledge, literal_of)
    if expected is not None and expected <= _MAX_CHECKED_MODELS:
        _check_every_model(sdd, decode, brute_force)
    # Each sample walks the whole circuit once: fewer of them for a large one.
    samples = max(2, min(_SAMPLES, _SAMPLED_LITERALS // len(literal_of)))
    _check_sampled_models(sdd, shape, counts, decode, brute_force, rng, samples)
    _check_concept_completions(sdd, knowledge, decode, brute_force, rng, samples)
    return model_count


class _Decoder:
    """Literal values -> a categorical assignment (domain positions by variable id)."""

    def __init__(self, knowledge: Knowledge, literal_of: dict):
        self.variables = knowledge.variables
        self.literals = [[literal_of[(v.id, p)] for p in range(len(v.domain))] for v in self.variables]

    def __call__(self, values: dict, fill) -> list:
        """Literals missing from `values` take fill(variable, position); each variable must end
        up with exactly one true indicator."""
        positions = []
        for variable, literals in zip(self.variables, self.literals):
            true = [p for p, literal in enumerate(literals)
                    if (values[literal] if literal in values else fill(variable, p))]
            if len(true) != 1:
                raise _EntryRejected(f"a model of the SDD gives {variable.name} {len(true)} values")
            positions.append(true[0])
        return positions


def _lane_literals(decode: _Decoder, lanes: list) -> tuple[dict, dict]:
    """For partial assignments (variable id -> position), one bit lane each: the lanes in which
    each literal may be true, and those in which it may be false."""
    true_lanes = {literal: 0 for literals in decode.literals for literal in literals}
    false_lanes = dict(true_lanes)
    for lane, fixed in enumerate(lanes):
        bit = 1 << lane
        for variable, literals in zip(decode.variables, decode.literals):
            chosen = fixed.get(variable.id)
            for p, literal in enumerate(literals):
                if chosen is None or chosen == p:
                    true_lanes[literal] |= bit
                if chosen is None or chosen != p:
                    false_lanes[literal] |= bit
    return true_lanes, false_lanes


def _check_every_model(sdd, decode, brute_force) -> None:
    """Every model of (small) knowledge must be a model of the circuit. With the model counts
    equal (checked before), the circuit then has no other model, and no model is counted twice."""
    models = brute_force.models(_MAX_ENUMERATED_ASSIGNMENTS)
    if models is None:
        return
    for start in range(0, len(models), 1024):
        lanes = [dict(enumerate(model)) for model in models[start:start + 1024].tolist()]
        value = sdd.satisfiable(len(lanes), *_lane_literals(decode, lanes))
        if value[sdd.root] != (1 << len(lanes)) - 1:
            raise _EntryRejected("the SDD rules out a model of the knowledge")


def _check_sampled_models(sdd, shape, counts, decode, brute_force, rng, samples) -> None:
    """Models drawn uniformly from the circuit (each element chosen in proportion to its
    model count) must satisfy every constraint table."""
    cumulative_weights: dict = {}  # decision node -> running totals of its elements' model counts

    def uniform_element(node: int) -> int:
        if node not in cumulative_weights:
            position = sdd.vtree[node]
            left, right = shape.left[position], shape.right[position]
            running, totals = 0, []
            for p, s in sdd.elements(node):
                running += sdd.count_within(p, left, counts, shape) * sdd.count_within(s, right, counts, shape)
                totals.append(running)
            cumulative_weights[node] = totals
        totals = cumulative_weights[node]
        return bisect.bisect_right(totals, rng.randrange(totals[-1]))

    # A literal that a model leaves free is a fair coin: a sound circuit has none.
    models = [decode(sdd.pick_model(uniform_element), lambda variable, p: rng.random() < 0.5)
              for _ in range(samples)]
    if not brute_force.satisfied(np.array(models)).all():
        raise _EntryRejected("a model of the SDD violates a constraint of the knowledge")


def _check_concept_completions(sdd, knowledge, decode, brute_force, rng, samples) -> None:
    """For random concept assignments, the circuit and a search over the tables must agree
    on whether a completion exists, and accept each other's completions."""
    concepts = knowledge.concepts
    assignments = [{c.id: rng.randrange(len(c.domain)) for c in concepts} for _ in range(samples)]
    completions = []  # a full assignment, None (none exists) or _UNDECIDED (the search gave up)
    for fixed in assignments:
        try:
            completions.append(brute_force.complete(fixed, _MAX_SEARCH_STEPS))
        except SearchLimitExceeded:
            completions.append(_UNDECIDED)
    # One pass over the circuit decides them all, one bit lane each: lanes 0..n-1 the concept
    # assignments, lanes n..2n-1 the completions the search found (all free where none).
    lanes = assignments + [dict(enumerate(c)) if isinstance(c, list) else {} for c in completions]
    value = sdd.satisfiable(len(lanes), *_lane_literals(decode, lanes))
    satisfiable_lanes = value[sdd.root]

    def first_possible_element(node: int, bit: int) -> int:
        start = sdd.element_start[node]
        for element in range(start, sdd.element_end[node]):
            if value[sdd.primes[element]] & value[sdd.subs[element]] & bit:
                return element - start
        raise AssertionError("a satisfiable decision node has a satisfiable element")

    circuit_completions = []
    for lane, (fixed, completion) in enumerate(zip(assignments, completions)):
        bit = 1 << lane
        if not satisfiable_lanes & bit:
            if isinstance(completion, list):
                raise _EntryRejected("the SDD rules out a concept assignment that the knowledge allows")
            continue
        if completion is None:
            raise _EntryRejected("the SDD completes a concept assignment that the knowledge rules out")
        if isinstance(completion, list) and not satisfiable_lanes & (bit << len(assignments)):
            raise _EntryRejected("the SDD rules out a model of the knowledge")
        values = sdd.pick_model(lambda node: first_possible_element(node, bit))
        chosen = decode(values, lambda variable, p: fixed.get(variable.id) == p)
        if any(chosen[v] != p for v, p in fixed.items()):
            raise _EntryRejected("the SDD's completion of a concept assignment changes the concepts")
        circuit_completions.append(chosen)
    if circuit_completions and not brute_force.satisfied(np.array(circuit_completions)).all():
        raise _EntryRejected("the SDD's completion of a concept assignment violates the knowledge")


# ----------------------------------------------------------------------------- writing an entry
def _write_cache_entry(cache_root: Path, key: str, contents: dict) -> Path:
    """Write the files and their manifest into a staging folder and rename it into place, so
    readers never see half an entry; an entry already in the way (damaged, or another
    process's equivalent one) is moved aside first."""
    cache_root.mkdir(parents=True, exist_ok=True)
    final = cache_root / key
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_root))
    try:
        for name, data in contents.items():
            (staging / name).write_bytes(data)
        (staging / MANIFEST).write_bytes(_manifest(key, contents))
        for _attempt in range(3):
            try:
                os.replace(staging, final)
                return final
            except OSError:
                trash = Path(tempfile.mkdtemp(prefix=f".{key}-replaced-", dir=cache_root))
                try:
                    os.replace(final, trash / "entry")
                except OSError:
                    pass
                shutil.rmtree(trash, ignore_errors=True)
        raise OSError(f"cannot replace the cache entry {final}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
