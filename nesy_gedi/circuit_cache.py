"""The on-disk circuit cache, which trusts nothing it reads back.

An entry is a folder holding knowledge.sdd, knowledge.vtree, meta.json and manifest.json
(the sha256 and size of the other three). Before PySDD or KLay sees a cached file, its hash
is checked (`read_verified_files`), the vtree is compared with the one the knowledge implies,
the SDD text is checked line by line against that vtree (`nesy_gedi.sdd_text`), and the
circuit is checked against the knowledge: model count, sampled models and random concept
assignments against the constraint tables (see `_verify_cached_circuit`). Anything off
raises `EntryRejected`; the compiler then rebuilds the entry, with a one-line CacheWarning.
Entries are written to a staging folder and renamed into place (`write_cache_entry`).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import random
import re
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np

from .decimal_text import parse_decimal
from .logic.brute_force import BruteForce, SearchLimitExceeded
from .logic.ground import Knowledge, describe_count
from .sdd_text import EntryRejected, SddText, VtreeShape


class CacheWarning(UserWarning):
    """A circuit cache entry failed verification and is rebuilt."""


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


def default_cache_dir() -> Path:
    if "NESY_GEDI_CACHE" in os.environ:
        return Path(os.environ["NESY_GEDI_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nesy-gedi" / "circuits"


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
        raise EntryRejected(f"cannot open {path.name}: {error.strerror or error}") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise EntryRejected(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise EntryRejected(f"{path.name} has {info.st_size} bytes, more than {max_bytes}")
        if expected_bytes is not None and info.st_size != expected_bytes:
            raise EntryRejected(f"{path.name} has {info.st_size} bytes, the manifest says {expected_bytes}")
        data = file.read(info.st_size + 1)  # one byte more reveals a file that grows meanwhile
    if len(data) != info.st_size:
        raise EntryRejected(f"{path.name} changed while it was read")
    return data


def read_verified_files(directory: Path, key: str) -> dict:
    """name -> bytes of the entry's files, each matching the size and sha256 in the manifest.

    FileNotFoundError when there is no entry at all (a plain cache miss).
    """
    if not directory.exists():
        raise FileNotFoundError(directory)
    try:
        manifest = json.loads(_read_regular_file(directory / MANIFEST, MAX_MANIFEST_BYTES))
    except FileNotFoundError:
        raise EntryRejected(f"{MANIFEST} is missing") from None
    except (ValueError, RecursionError):
        raise EntryRejected(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        raise EntryRejected(f"{MANIFEST} belongs to another entry")
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or sorted(recorded) != sorted(CACHED_FILES):
        raise EntryRejected(f"{MANIFEST} does not list {', '.join(CACHED_FILES)}")
    contents = {}
    for name in CACHED_FILES:
        entry = recorded[name]
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and type(entry.get("bytes")) is int and entry["bytes"] >= 0):
            raise EntryRejected(f"{MANIFEST} has a malformed record for {name}")
        try:
            data = _read_regular_file(directory / name, MAX_CACHED_FILE_BYTES, entry["bytes"])
        except FileNotFoundError:
            raise EntryRejected(f"{name} is missing") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise EntryRejected(f"{name} does not match its sha256 in {MANIFEST}")
        contents[name] = data
    return contents


def _manifest(key: str, contents: dict) -> bytes:
    files = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
             for name, data in contents.items()}
    return json.dumps({"key": key, "files": files}, indent=1, sort_keys=True).encode()


def checked_meta(data: bytes, key: str, literal_of: dict) -> dict:
    """meta.json, with every field of the expected type and the literal numbering the knowledge implies."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        raise EntryRejected("meta.json is not JSON") from None
    if not isinstance(meta, dict):
        raise EntryRejected("meta.json is not an object")
    if meta.get("key") != key:
        raise EntryRejected("meta.json belongs to another entry")
    expected_literals = [[v, p, lit] for (v, p), lit in literal_of.items()]
    if meta.get("literals") != expected_literals:
        raise EntryRejected("the literal numbering in meta.json is not the knowledge's")
    if meta.get("num_literals") != len(literal_of):
        raise EntryRejected("num_literals in meta.json is not the knowledge's")
    for name in ("sdd_size", "sdd_node_count"):
        if type(meta.get(name)) is not int or meta[name] < 0:
            raise EntryRejected(f"{name} in meta.json is not a count")
    seconds = meta.get("compile_seconds")
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0:
        raise EntryRejected("compile_seconds in meta.json is not a duration")
    count = meta.get("model_count")
    if not (isinstance(count, str) and re.fullmatch(r"[0-9]+", count)):
        raise EntryRejected("model_count in meta.json is not a string of digits")
    meta["model_count"] = parse_decimal(count)
    return meta


def verify_circuit(contents: dict, expected_vtree: bytes, knowledge: Knowledge, literal_of: dict, meta: dict,
                   rng: random.Random) -> int:
    """The exact model count of an entry's circuit (`contents` from read_verified_files, `meta`
    from checked_meta) once it passed every check; EntryRejected saying what was off.
    `expected_vtree`: the vtree of this knowledge, as a manager writes it."""
    if contents["knowledge.vtree"] != expected_vtree:
        raise EntryRejected("knowledge.vtree is not the vtree of this knowledge")
    shape = VtreeShape.parse(expected_vtree.decode("ascii"))
    try:
        sdd = SddText.parse(contents["knowledge.sdd"], shape)
        return _verify_cached_circuit(sdd, shape, knowledge, literal_of, meta, rng)
    except (ArithmeticError, LookupError, TypeError, ValueError) as error:
        # Damage that the checks did not foresee: still a reason to rebuild, not to crash.
        raise EntryRejected(f"checking the SDD failed with {type(error).__name__}") from None


def _verify_cached_circuit(sdd: SddText, shape: VtreeShape, knowledge: Knowledge, literal_of: dict,
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
        raise EntryRejected("the SDD's size is not the one in meta.json")
    model_count, counts = sdd.model_counts(shape)
    if model_count != meta["model_count"]:
        raise EntryRejected("the SDD's model count is not the one in meta.json")
    if model_count == 0:
        raise EntryRejected("the SDD has no model")  # unsatisfiable knowledge is never cached
    brute_force = BruteForce(knowledge)
    expected = brute_force.count_models(_MAX_ENUMERATED_ASSIGNMENTS)
    if expected is not None and expected != model_count:
        raise EntryRejected(f"the SDD has {describe_count(model_count)} models, "
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
                raise EntryRejected(f"a model of the SDD gives {variable.name} {len(true)} values")
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
            raise EntryRejected("the SDD rules out a model of the knowledge")


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
        raise EntryRejected("a model of the SDD violates a constraint of the knowledge")


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
                raise EntryRejected("the SDD rules out a concept assignment that the knowledge allows")
            continue
        if completion is None:
            raise EntryRejected("the SDD completes a concept assignment that the knowledge rules out")
        if isinstance(completion, list) and not satisfiable_lanes & (bit << len(assignments)):
            raise EntryRejected("the SDD rules out a model of the knowledge")
        values = sdd.pick_model(lambda node: first_possible_element(node, bit))
        chosen = decode(values, lambda variable, p: fixed.get(variable.id) == p)
        if any(chosen[v] != p for v, p in fixed.items()):
            raise EntryRejected("the SDD's completion of a concept assignment changes the concepts")
        circuit_completions.append(chosen)
    if circuit_completions and not brute_force.satisfied(np.array(circuit_completions)).all():
        raise EntryRejected("the SDD's completion of a concept assignment violates the knowledge")


# ----------------------------------------------------------------------------- writing an entry
def write_cache_entry(cache_root: Path, key: str, contents: dict) -> Path:
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
