"""Compile ground knowledge into an SDD with PySDD, and cache the result on disk.

Each categorical variable X with domain {v1..vd} becomes d indicator literals
"X = vi" plus an exactly-one constraint. Each ground constraint is compiled over its
own small scope (a decision diagram over its table of allowed tuples) and conjoined.
The variable order follows the constraints as written, so a chain of constraints
such as a carry-propagating addition gives a diagram whose size grows linearly.
"""
from __future__ import annotations

import array
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pysdd.sdd import SddManager, SddNode, Vtree

from .errors import LogicError
from .logic.ground import Knowledge, ground, read_logic_file
from .logic.syntax import parse

COMPILER_VERSION = "2"
VTREE_TYPES = ("blocks", "right", "balanced")  # a left-linear vtree blows up on one-hot tables


@dataclass
class CompiledKnowledge:
    """Ground knowledge, its SDD on disk and what the circuit layer needs to feed it."""

    knowledge: Knowledge
    literal_of: dict  # (variable id, domain position) -> SDD variable (1-based)
    num_literals: int
    directory: Path  # holds knowledge.sdd, knowledge.vtree, meta.json
    sdd_size: int
    sdd_node_count: int
    model_count: int
    compile_seconds: float
    cache_hit: bool
    _manager: SddManager | None = field(default=None, repr=False)
    _root: SddNode | None = field(default=None, repr=False)

    @property
    def sdd_file(self) -> Path:
        return self.directory / "knowledge.sdd"

    @property
    def vtree_file(self) -> Path:
        return self.directory / "knowledge.vtree"

    def literals(self, variable) -> list:
        return [self.literal_of[(variable.id, p)] for p in range(len(variable.domain))]

    def sdd(self) -> tuple[SddManager, SddNode]:
        """The live PySDD manager and root (read back from disk after a cache hit)."""
        if self._manager is None:
            vtree = Vtree.from_file(str(self.vtree_file).encode())
            self._manager = SddManager.from_vtree(vtree)
            self._root = self._manager.read_sdd_file(str(self.sdd_file).encode())
        return self._manager, self._root

    def summary(self) -> dict:
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
            "model_count": self.model_count,
            "compile_seconds": round(self.compile_seconds, 4),
            "cache_hit": self.cache_hit,
        }


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


def _value_terms(manager: SddManager, literals: list) -> list:
    """For each value, the term "this indicator true and every other false"."""
    terms = []
    for chosen in literals:
        term = manager.literal(chosen)
        for other in literals:
            if other != chosen:
                term = term & manager.literal(-other)
        terms.append(term)
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


def _exactly_one(manager: SddManager, literals: list) -> SddNode:
    result = manager.false()
    for term in _value_terms(manager, literals):
        result = result | term
    return result


def _table_sdd(manager: SddManager, literal_columns: list, rows: np.ndarray) -> SddNode:
    """The disjunction of the allowed rows, shared as a multi-valued decision diagram.

    Each value is the full term "X = v and X != every other value": with positive
    indicators alone the function would be a large monotone one (millions of nodes
    for one addition column). The result therefore also implies exactly-one for
    every variable in the scope. The diagram is built from the dense table of the
    scope, one column at a time, with equal sub-tables shared.
    """
    terms = [_value_terms(manager, literals) for literals in literal_columns]
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


def _check_labels_are_functions(knowledge, manager, root, literal_of) -> None:
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
                f"allows several values of it ({with_label} concept/label combinations for "
                f"{concept_tuples} concept assignments)", knowledge.path, label.line)


def compile_knowledge_uncached(knowledge: Knowledge, vtree_type: str = "blocks") -> tuple:
    if vtree_type not in VTREE_TYPES:
        raise LogicError(f"unknown vtree type {vtree_type!r} (choose from {', '.join(VTREE_TYPES)})")
    if not knowledge.variables:
        raise LogicError("the knowledge declares no variable", knowledge.path)
    order = variable_order(knowledge)
    literal_of: dict = {}
    for variable_id in order:
        for position in range(len(knowledge.variables[variable_id].domain)):
            literal_of[(variable_id, position)] = len(literal_of) + 1
    num_literals = len(literal_of)
    if vtree_type == "blocks":
        blocks, placed = [], set()
        for constraint in knowledge.constraints:
            block = [v for v in constraint.scope if v not in placed]
            placed.update(block)
            if block:
                blocks.append([literal_of[(v, p)] for v in block
                               for p in range(len(knowledge.variables[v].domain))])
        blocks.extend([literal_of[(v.id, p)] for p in range(len(v.domain))]
                      for v in knowledge.variables if v.id not in placed)
        with tempfile.TemporaryDirectory() as scratch:
            vtree = _block_vtree(blocks, Path(scratch) / "blocks.vtree")
    else:
        vtree = Vtree(var_count=num_literals, var_order=list(range(1, num_literals + 1)), vtree_type=vtree_type)
    manager = SddManager.from_vtree(vtree)
    manager.auto_gc_and_minimize_off()

    def literals(variable_id: int) -> list:
        return [literal_of[(variable_id, p)] for p in range(len(knowledge.variables[variable_id].domain))]

    root = manager.true()
    constrained: set = set()
    for constraint in knowledge.constraints:
        root = root & _table_sdd(manager, [literals(i) for i in constraint.scope], constraint.allowed)
        constrained.update(constraint.scope)
        if root.is_false():
            raise LogicError("the knowledge is unsatisfiable: no assignment satisfies this constraint "
                             "together with the ones before it", knowledge.path, constraint.line)
    for variable in knowledge.variables:
        if variable.id not in constrained:
            root = root & _exactly_one(manager, literals(variable.id))
    model_count = exact_model_count(manager, root)
    _check_labels_are_functions(knowledge, manager, root, literal_of)
    return manager, root, literal_of, num_literals, model_count


# ----------------------------------------------------------------------------- disk cache
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
                 cache_dir: str | Path | None = None, use_cache: bool = True) -> CompiledKnowledge:
    """Parse, ground and compile a logic file; reuse the on-disk SDD when file and parameters match.

    With use_cache=False the SDD files go to a private temporary folder that is removed
    when the returned object is garbage-collected.
    """
    if vtree_type not in VTREE_TYPES:
        raise LogicError(f"unknown vtree type {vtree_type!r} (choose from {', '.join(VTREE_TYPES)})", str(path))
    text = read_logic_file(path)
    knowledge = ground(parse(text, str(path)), params)
    key = cache_key(text, knowledge.params, vtree_type)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if use_cache:
        meta = _read_cache_entry(cache_root / key)
        if meta is not None:
            literal_of = {(int(v), int(p)): int(lit) for v, p, lit in meta["literals"]}
            return CompiledKnowledge(knowledge, literal_of, int(meta["num_literals"]), cache_root / key,
                                     int(meta["sdd_size"]), int(meta["sdd_node_count"]),
                                     int(meta["model_count"]), float(meta["compile_seconds"]), True)

    start = time.perf_counter()
    manager, root, literal_of, num_literals, model_count = compile_knowledge_uncached(knowledge, vtree_type)
    seconds = time.perf_counter() - start
    meta = {
        "literals": [[v, p, lit] for (v, p), lit in literal_of.items()],
        "num_literals": num_literals,
        "sdd_size": root.size(),
        "sdd_node_count": root.count(),
        "model_count": str(model_count),
        "compile_seconds": seconds,
        "params": knowledge.params,
        "logic": str(path),
    }
    directory = None
    if use_cache:
        try:
            directory = _write_cache_entry(cache_root, key, manager, root, meta)
        except OSError as error:
            warnings.warn(f"cannot write the circuit cache in {cache_root} ({error}); compiling without it",
                          stacklevel=2)
    temporary = directory is None
    if temporary:
        directory = Path(tempfile.mkdtemp(prefix="nesy-gedi-sdd-"))
        _save_sdd(directory, manager, root, meta)
    compiled = CompiledKnowledge(knowledge, literal_of, num_literals, directory, meta["sdd_size"],
                                 meta["sdd_node_count"], model_count, seconds, False, manager, root)
    if temporary:
        weakref.finalize(compiled, shutil.rmtree, str(directory), True)
    return compiled


def _read_cache_entry(directory: Path) -> dict | None:
    """The metadata of a complete, readable cache entry, or None (missing or damaged: rebuild)."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        for name in ("literals", "num_literals", "sdd_size", "sdd_node_count", "model_count", "compile_seconds"):
            meta[name]
        int(meta["model_count"])
        if not ((directory / "knowledge.sdd").is_file() and (directory / "knowledge.vtree").is_file()):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_sdd(directory: Path, manager: SddManager, root: SddNode, meta: dict) -> None:
    root.save(str(directory / "knowledge.sdd").encode())
    manager.vtree().save(str(directory / "knowledge.vtree").encode())
    (directory / "meta.json").write_text(json.dumps(meta))


def _write_cache_entry(cache_root: Path, key: str, manager, root, meta) -> Path:
    """Write into a temporary folder and rename it, so readers never see half an entry."""
    cache_root.mkdir(parents=True, exist_ok=True)
    final = cache_root / key
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_root))
    _save_sdd(staging, manager, root, meta)
    for _attempt in range(3):
        try:
            os.replace(staging, final)
            return final
        except OSError:
            if _read_cache_entry(final) is not None:
                # Another process won the race with a complete entry: use theirs.
                shutil.rmtree(staging, ignore_errors=True)
                return final
            # A damaged entry is in the way: move it aside and try again.
            trash = Path(tempfile.mkdtemp(prefix=f".{key}-damaged-", dir=cache_root))
            try:
                os.replace(final, trash / "entry")
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    raise OSError(f"cannot replace the cache entry {final}")
