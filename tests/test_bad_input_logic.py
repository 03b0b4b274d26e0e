"""Hostile input to the logic pipeline: damaged cache entries, oversized files, runaway
compilations, model counts beyond Python's printing limit, knowledge without labels.

Nothing read from disk is trusted. Each cache damage below, read naively, crashes training
(signal 11, a 17 GB allocation, a bus error) or is taken at its word (wrong answers, a
forged model count); it must be noticed, named in a one-line CacheWarning, and the entry
recompiled and rewritten. Each damage is tried as is (the manifest's hashes catch
it) and "resealed": with the manifest rewritten to match, as a consistent forgery or a
buggy writer would leave it, so that the checks against the knowledge must catch it.
After the notice the circuit must agree with arithmetic and with a fresh compile.
"""
from __future__ import annotations

import array
import json
import os
import random
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi import circuit_cache, compiler
from nesy_gedi.circuit import KnowledgeCircuit
from nesy_gedi.circuit_cache import CacheWarning
from nesy_gedi.cli import main
from nesy_gedi.compiler import compile_file, compile_knowledge_uncached, exact_model_count, require_labels
from nesy_gedi.decimal_text import decimal_string, json_safe_count, parse_decimal
from nesy_gedi.errors import LogicError
from nesy_gedi.logic import syntax as syntax_module
from nesy_gedi.logic.brute_force import BruteForce
from nesy_gedi.logic.ground import load_knowledge

LOGIC = Path(__file__).resolve().parents[1] / "logic"
ADDITION = LOGIC / "addition.logic"
CACHED_FILES = ("knowledge.sdd", "knowledge.vtree", "meta.json")


def digits_of(number: int) -> str:
    """An independent reference for huge decimal strings: Python's own, with its limit lifted."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(number)
    finally:
        sys.set_int_max_str_digits(limit)


# ----------------------------------------------------------------------------- right answers
def assert_right_answers(compiled, n: int) -> None:
    """The compiled N-digit addition agrees with arithmetic and with an uncached compile."""
    assert compiled.model_count == 10 ** (2 * n)
    circuit = KnowledgeCircuit(compiled, compile_module=False)
    rng = np.random.default_rng(n)
    digits = rng.integers(0, 10, size=(48, 2 * n))
    labels, consistent = circuit.deduce_labels(torch.from_numpy(digits))
    assert consistent.all()
    for row, label in zip(digits.tolist(), labels.tolist()):
        a, b = (int("".join(map(str, row[i * n:(i + 1) * n]))) for i in range(2))
        assert label == [int(c) for c in str(a + b).zfill(n + 1)]
    fresh = KnowledgeCircuit(compile_file(ADDITION, {"N": n}, use_cache=False), compile_module=False)
    log_probs = torch.log_softmax(torch.from_numpy(rng.normal(size=(6, 2 * n, 10)) * 2), dim=-1)
    evidence = torch.cat([labels[:3], torch.from_numpy(rng.integers(-1, 10, size=(3, n + 1)))])
    torch.testing.assert_close(circuit(log_probs, evidence), fresh(log_probs, evidence))
    manager, root = compiled.sdd()
    assert exact_model_count(manager, root) == 10 ** (2 * n)


# ----------------------------------------------------------------------------- ways to damage an entry
def reseal(entry: Path) -> None:
    """Rewrite the manifest to match the entry's files, as a consistent forgery would."""
    contents = {name: (entry / name).read_bytes() for name in CACHED_FILES}
    (entry / "manifest.json").write_bytes(circuit_cache._manifest(entry.name, contents))


def read_meta(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())


def edit_meta(entry: Path, **changes) -> None:
    (entry / "meta.json").write_text(json.dumps({**read_meta(entry), **changes}))


def donor_entry(cache: Path, n: int) -> Path:
    """Another knowledge base over the same variables and vtree: addition with a[0] < 5."""
    path = cache.parent / "donor.logic"
    path.write_text(ADDITION.read_text() + "constraint a[0] < 5\n")
    return compile_file(path, {"N": n}, cache_dir=cache).directory


def empty_sdd(entry, cache, n):
    (entry / "knowledge.sdd").write_bytes(b"")


def garbage_sdd(entry, cache, n):
    (entry / "knowledge.sdd").write_bytes(random.Random(0).randbytes(3000))


def huge_header_sdd(entry, cache, n):
    text = (entry / "knowledge.sdd").read_text()
    (entry / "knowledge.sdd").write_text(re.sub(r"^sdd \d+$", "sdd 2000000000", text, flags=re.M))


def truncated_sdd(entry, cache, n):
    data = (entry / "knowledge.sdd").read_bytes()
    (entry / "knowledge.sdd").write_bytes(data[:len(data) // 2])


def undefined_node_sdd(entry, cache, n):
    lines = (entry / "knowledge.sdd").read_text().splitlines()
    fields = lines[-1].split()
    lines[-1] = " ".join(fields[:-1] + ["999999"])  # the root's last sub: a node that does not exist
    (entry / "knowledge.sdd").write_text("\n".join(lines) + "\n")


def non_partition_sdd(entry, cache, n):
    """Well-formed, but the root's primes overlap: libsdd's reader crashes on such a node."""
    lines = (entry / "knowledge.sdd").read_text().splitlines()
    false_nodes = {line.split()[1] for line in lines if line.startswith("F ")}
    fields = lines[-1].split()
    primes, subs = fields[4::2], fields[5::2]
    prime, sub = next((primes[i], subs[j]) for i in range(len(primes)) for j in range(len(subs))
                      if i != j and subs[j] not in false_nodes and subs[j] != subs[i])
    fields[3] = str(int(fields[3]) + 1)
    lines[-1] = " ".join(fields + [prime, sub])
    (entry / "knowledge.sdd").write_text("\n".join(lines) + "\n")
    edit_meta(entry, sdd_size=read_meta(entry)["sdd_size"] + 1)


def other_knowledge_sdd(entry, cache, n):
    (entry / "knowledge.sdd").write_bytes((donor_entry(cache, n) / "knowledge.sdd").read_bytes())


def other_knowledge_circuit(entry, cache, n):
    """The other knowledge's SDD with its own figures in meta.json: only the knowledge can tell."""
    donor = donor_entry(cache, n)
    (entry / "knowledge.sdd").write_bytes((donor / "knowledge.sdd").read_bytes())
    figures = read_meta(donor)
    edit_meta(entry, **{k: figures[k] for k in ("sdd_size", "sdd_node_count", "model_count")})


def labels_set_free(entry, cache, n):
    """An SDD with more models than the knowledge: the sum digits may take any value."""
    knowledge = load_knowledge(ADDITION, {"N": n})
    manager, root, literal_of, _, _ = compile_knowledge_uncached(knowledge)
    labels = [[literal_of[(s.id, p)] for p in range(len(s.domain))] for s in knowledge.labels]
    exists = [0] * (manager.var_count() + 1)
    for literals in labels:
        for literal in literals:
            exists[literal] = 1
    free = manager.exists_multiple(array.array("i", exists), root)
    for literals in labels:
        free = free & compiler._exactly_one(manager, literals)
    free.save(str(entry / "knowledge.sdd").encode())
    edit_meta(entry, sdd_size=free.size(), sdd_node_count=free.count(),
              model_count=decimal_string(exact_model_count(manager, free)))


def garbage_vtree(entry, cache, n):
    (entry / "knowledge.vtree").write_text("vtree 5\nL 0 1\nI 1 0 7\n")  # libsdd died of a bus error


def swapped_literals(entry, cache, n):
    meta = read_meta(entry)
    first, second = meta["literals"][0], meta["literals"][1]
    first[2], second[2] = second[2], first[2]
    edit_meta(entry, literals=meta["literals"])


def forged_model_count(entry, cache, n):
    edit_meta(entry, model_count="123456789")


def literal_entry_of_wrong_arity(entry, cache, n):
    meta = read_meta(entry)
    meta["literals"][0] = [0, 0]
    edit_meta(entry, literals=meta["literals"])


def literal_out_of_range(entry, cache, n):
    meta = read_meta(entry)
    meta["literals"][0][2] = 9999
    edit_meta(entry, literals=meta["literals"])


def num_literals_not_a_number(entry, cache, n):
    edit_meta(entry, num_literals="many")


def compile_seconds_not_a_number(entry, cache, n):
    edit_meta(entry, compile_seconds="slow")


def deeply_nested_meta(entry, cache, n):
    (entry / "meta.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json


def manifest_missing(entry, cache, n):
    (entry / "manifest.json").unlink()


def other_entry_copied_whole(entry, cache, n):
    donor = donor_entry(cache, n)
    for name in CACHED_FILES + ("manifest.json",):
        (entry / name).write_bytes((donor / name).read_bytes())


def fifo_sdd(entry, cache, n):
    (entry / "knowledge.sdd").unlink()
    os.mkfifo(entry / "knowledge.sdd")  # opening it for reading would wait for a writer forever


HASH_MISMATCH = r"knowledge\.sdd (does not match its sha256 in manifest\.json|has \d+ bytes, the manifest says \d+)"
META_MISMATCH = r"meta\.json (does not match its sha256 in manifest\.json|has \d+ bytes, the manifest says \d+)"
# (damage, N, the reason named as is, the reason named when resealed; None: resealing is moot)
DAMAGES = [
    (empty_sdd, 2, HASH_MISMATCH, r"knowledge\.sdd has no 'sdd <count>' header"),
    (garbage_sdd, 2, HASH_MISMATCH, r"knowledge\.sdd is not ASCII text"),
    (huge_header_sdd, 2, HASH_MISMATCH, r"knowledge\.sdd claims 2000000000 nodes but has \d+"),
    (truncated_sdd, 2, HASH_MISMATCH, r"knowledge\.sdd (has a malformed node line|claims \d+ nodes but has \d+)"),
    (undefined_node_sdd, 2, HASH_MISMATCH, r"knowledge\.sdd refers to an undefined node"),
    (non_partition_sdd, 2, HASH_MISMATCH, r"the SDD's model count is not the one in meta\.json"),
    (non_partition_sdd, 1, HASH_MISMATCH, r"the SDD's model count is not the one in meta\.json"),
    (other_knowledge_sdd, 2, HASH_MISMATCH, r"the SDD's size is not the one in meta\.json"),
    (other_knowledge_circuit, 2, HASH_MISMATCH,
     r"the SDD rules out a concept assignment that the knowledge allows"),
    (other_knowledge_circuit, 1, HASH_MISMATCH, r"the SDD has 50 models, the knowledge 100"),
    (labels_set_free, 2, HASH_MISMATCH, r"a model of the SDD violates a constraint of the knowledge"),
    (labels_set_free, 1, HASH_MISMATCH, r"the SDD has 10000 models, the knowledge 100"),
    (garbage_vtree, 2, r"knowledge\.vtree has \d+ bytes, the manifest says \d+",
     r"knowledge\.vtree is not the vtree of this knowledge"),
    (swapped_literals, 2, META_MISMATCH, r"the literal numbering in meta\.json is not the knowledge's"),
    (forged_model_count, 2, META_MISMATCH, r"the SDD's model count is not the one in meta\.json"),
    (literal_entry_of_wrong_arity, 2, META_MISMATCH, r"the literal numbering in meta\.json is not the knowledge's"),
    (literal_out_of_range, 2, META_MISMATCH, r"the literal numbering in meta\.json is not the knowledge's"),
    (num_literals_not_a_number, 2, META_MISMATCH, r"num_literals in meta\.json is not the knowledge's"),
    (compile_seconds_not_a_number, 2, META_MISMATCH, r"compile_seconds in meta\.json is not a duration"),
    (deeply_nested_meta, 2, META_MISMATCH, r"meta\.json is not JSON"),
    (manifest_missing, 2, r"manifest\.json is missing", None),
    (other_entry_copied_whole, 2, r"manifest\.json belongs to another entry", r"meta\.json belongs to another entry"),
    (fifo_sdd, 2, r"knowledge\.sdd is not a regular file", None),
]
CASES = [pytest.param(damage, n, as_is, False, id=f"{damage.__name__}-N{n}-as-is")
         for damage, n, as_is, _ in DAMAGES]
CASES += [pytest.param(damage, n, resealed, True, id=f"{damage.__name__}-N{n}-resealed")
          for damage, n, _, resealed in DAMAGES if resealed is not None]


@pytest.mark.parametrize("damage, n, reason, resealed", CASES)
def test_damaged_cache_entry_is_noticed_rebuilt_and_right(tmp_path, damage, n, reason, resealed):
    cache = tmp_path / "cache"
    entry = compile_file(ADDITION, {"N": n}, cache_dir=cache).directory
    damage(entry, cache, n)
    if resealed:
        reseal(entry)
    notice = re.escape(f"circuit cache entry {entry} failed verification (") + reason + r"\); recompiling "
    with pytest.warns(CacheWarning, match=notice) as notices:
        rebuilt = compile_file(ADDITION, {"N": n}, cache_dir=cache)
    assert len(notices) == 1 and "\n" not in str(notices[0].message)
    assert not rebuilt.cache_hit and rebuilt.directory == entry
    assert_right_answers(rebuilt, n)
    # The entry was rewritten: the next compile is a quiet, verified cache hit.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = compile_file(ADDITION, {"N": n}, cache_dir=cache)
    assert again.cache_hit and again.directory == entry
    assert_right_answers(again, n)


def test_rewriting_the_shared_entry_after_loading_changes_nothing(tmp_path):
    """KLay and PySDD use this process's verified copy: rewriting the shared entry afterwards
    (another process, a careless user) changes nothing."""
    cache = tmp_path / "cache"
    compile_file(ADDITION, {"N": 2}, cache_dir=cache)
    hit = compile_file(ADDITION, {"N": 2}, cache_dir=cache)
    assert hit.cache_hit and hit.sdd_file.parent != hit.directory
    for name in CACHED_FILES:
        (hit.directory / name).write_bytes(b"sdd 2000000000\n")
    assert_right_answers(hit, 2)


def test_libsdd_never_reads_a_cached_file(tmp_path, monkeypatch):
    """libsdd's readers trust their input (ids, counts, partitions) and crash on bad input, so the
    compiler only hands them the vtree files it writes itself, and never an SDD file."""
    cache = tmp_path / "cache"
    vtree_reads = []
    real_manager, real_vtree = compiler.SddManager, compiler.Vtree

    class Manager:
        """Stands for a PySDD manager, and fails the test if its SDD file reader is used."""
        def __init__(self, manager):
            self.manager = manager

        def __getattr__(self, name):
            assert name != "read_sdd_file", "libsdd's SDD reader was handed a file"
            return getattr(self.manager, name)

        @staticmethod
        def from_vtree(vtree):
            return Manager(real_manager.from_vtree(vtree))

    class VtreeReader:
        def __new__(cls, *args, **kwargs):
            return real_vtree(*args, **kwargs)

        @staticmethod
        def from_file(path):
            vtree_reads.append(Path(path.decode()))
            return real_vtree.from_file(path)

    monkeypatch.setattr(compiler, "SddManager", Manager)
    monkeypatch.setattr(compiler, "Vtree", VtreeReader)
    compile_file(ADDITION, {"N": 2}, cache_dir=cache)
    hit = compile_file(ADDITION, {"N": 2}, cache_dir=cache)
    assert hit.cache_hit
    manager, root = hit.sdd()
    assert exact_model_count(manager.manager, root) == 10**4
    assert vtree_reads and not any(cache in path.parents for path in vtree_reads)


# ----------------------------------------------------------------------------- huge model counts
BIG = "param K = 14300\nconcept d[i in 0..K-1] : 0..1\n"  # 2**14300 models: 4305 digits


@pytest.fixture(scope="module")
def big_count(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    path = folder / "big.logic"
    path.write_text(BIG)
    return path, folder / "cache", compile_file(path, cache_dir=folder / "cache")


def test_model_count_beyond_4300_digits_is_exact_in_summary_and_json(big_count):
    _, _, compiled = big_count
    assert compiled.model_count == 2**14300
    expected = digits_of(2**14300)
    assert len(expected) == 4305
    summary = compiled.summary()
    assert summary["model_count"] == expected
    assert json.loads(json.dumps(summary))["model_count"] == expected


def test_model_count_beyond_4300_digits_survives_the_cache(big_count):
    path, cache, first = big_count
    hit = compile_file(path, cache_dir=cache)
    assert hit.cache_hit and hit.model_count == 2**14300
    assert read_meta(first.directory)["model_count"] == digits_of(2**14300)


def test_cli_prints_a_model_count_beyond_4300_digits(big_count, monkeypatch, capsys):
    path, cache, _ = big_count
    monkeypatch.setenv("NESY_GEDI_CACHE", str(cache))
    assert main(["compile", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_count"] == digits_of(2**14300)
    assert main(["compile", str(path)]) == 0
    assert f"  model count   {digits_of(2**14300)}\n" in capsys.readouterr().out


HUGE_NUMBERS = {"0": 0, "7": 7, "10**4299": 10**4299, "10**4300": 10**4300, "10**4400": 10**4400,
                "10**4400-1": 10**4400 - 1, "7**9000": 7**9000, "2**53*10**8000+1": 2**53 * 10**8000 + 1}


@pytest.mark.parametrize("number", HUGE_NUMBERS.values(), ids=HUGE_NUMBERS.keys())
def test_decimal_strings_of_any_size(number):
    assert decimal_string(number) == digits_of(number)
    assert parse_decimal(digits_of(number)) == number
    assert decimal_string(-number) == ("-" + digits_of(number) if number else "0")


def test_json_safe_counts_and_bad_digit_strings():
    assert json_safe_count(2**53 - 1) == 2**53 - 1  # an int: exact in every JSON reader
    assert json_safe_count(2**53) == "9007199254740992"
    for text in ("", "12a", "-5", "1 2", "\u0661\u0662", "0x10"):
        with pytest.raises(ValueError):
            parse_decimal(text)


def test_label_check_message_with_counts_beyond_4300_digits(tmp_path):
    path = tmp_path / "k.logic"
    path.write_text("param N = 15000\nconcept a[i in 0..N-1] : 0..1\nlabel s : 0..1\nconstraint s <= a[0]\n")
    with pytest.raises(LogicError, match=r":3: label s is not a function of the concepts: .* \(about 4\.2e\+4515 "
                                         r"concept/label combinations for about 2\.8e\+4515 concept assignments\)"):
        compile_file(path, use_cache=False)


def test_scope_message_with_a_count_beyond_4300_digits(tmp_path):
    path = tmp_path / "k.logic"
    path.write_text("param N = 20000\nconcept a[i in 0..N-1] : 0..1\nconstraint sum(i in 0..N-1: a[i]) >= 0\n")
    with pytest.raises(LogicError, match=r":3: this constraint ranges over 20000 variables with about 4\.0e\+6020 "
                                         r"joint assignments \(at most 4000000\)"):
        compile_file(path, use_cache=False)


# ----------------------------------------------------------------------------- compilation budget
ALL_DIFFERENT = ("param K = 10\nconcept x[i in 0..K-1] : 0..K-1\n\n"
                 "constraint forall i in 0..K-1, j in 0..K-1 where i < j: x[i] != x[j]\n")


def test_size_budget_stops_a_runaway_compilation_at_its_constraint(tmp_path):
    path = tmp_path / "alldiff.logic"
    path.write_text(ALL_DIFFERENT)
    start = time.perf_counter()
    with pytest.raises(LogicError) as error:
        compile_file(path, use_cache=False, max_sdd_size=20_000)
    assert time.perf_counter() - start < 20
    message = str(error.value)
    assert message.startswith(f"{path}:4: the circuit outgrows its budget while ")
    assert "the constraint `forall i in 0..K-1, j in 0..K-1 where i < j: x[i] != x[j]`" in message
    assert "more than max_sdd_size=20000" in message
    # Within budget, the same file compiles: 10! permutations.
    assert compile_file(path, use_cache=False, max_sdd_size=10**7).model_count == 3628800


def test_time_budget_stops_a_runaway_compilation_at_its_constraint(tmp_path):
    path = tmp_path / "alldiff.logic"
    path.write_text(ALL_DIFFERENT.replace("K = 10", "K = 13"))
    start = time.perf_counter()
    with pytest.raises(LogicError, match=re.escape(f"{path}:4: compilation takes longer than its budget of "
                                                   f"max_seconds=0.2 s while ")):
        compile_file(path, use_cache=False, max_seconds=0.2)
    assert time.perf_counter() - start < 20


def test_module_default_budget_applies_to_every_caller(tmp_path, monkeypatch):
    path = tmp_path / "alldiff.logic"
    path.write_text(ALL_DIFFERENT)
    monkeypatch.setattr(compiler, "DEFAULT_MAX_SDD_SIZE", 20_000)
    with pytest.raises(LogicError, match=r":4: .*max_sdd_size=20000"):
        compile_file(path, use_cache=False)
    with pytest.raises(LogicError, match=r"max_sdd_size=20000"):
        compile_knowledge_uncached(load_knowledge(path))
    with pytest.raises(ValueError, match="must be positive"):
        compile_file(ADDITION, use_cache=False, max_seconds=0)


@pytest.mark.parametrize("make_text, sizes", [
    (lambda k: (LOGIC / "parity.logic").read_text().replace("param K = 4", f"param K = {k}"), (250, 500)),
    (lambda k: f"concept d[i in 0..{k - 1}] : 0..1\n", (1000, 2000)),  # unconstrained variables
    (lambda k: f"concept a : 0..1\nhidden h : 0..{k - 1}\nlabel s : 0..1\nconstraint s == a\n", (1000, 2000)),
], ids=["chain-of-constraints", "unconstrained-variables", "large-domain"])
def test_compilation_memory_grows_linearly(tmp_path, make_text, sizes):
    """Conjoining along the vtree from the bottom up, and building the one-hot terms from shared
    running conjunctions, keep the SDD manager (which never frees a node) linear in size: one
    at a time from the top, a chain of 20,000 variables ended in `calloc failed`, and a
    variable with 10,000 values in `malloc failed`."""
    managed = []
    for size in sizes:
        manager, *_ = compile_knowledge_uncached(load_knowledge(_write(tmp_path, make_text(size))))
        managed.append(manager.size())
    assert managed[1] / managed[0] < 2.5, managed


def _write(folder: Path, text: str, name: str = "k.logic") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_unsatisfiable_knowledge_still_names_the_first_constraint_that_fails(tmp_path):
    # The conjunction now runs from the last constraint up; the error still names the first
    # constraint that is unsatisfiable together with the ones before it.
    text = "concept a : 0..9\n" + "constraint a != 3\n" * 20 + "constraint a == 3\n" + "constraint a != 4\n" * 20
    with pytest.raises(LogicError, match=r"k\.logic:22: the knowledge is unsatisfiable"):
        compile_file(_write(tmp_path, text), use_cache=False)


# ----------------------------------------------------------------------------- oversized logic files
def test_oversized_logic_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.logic"
    with open(path, "wb") as file:
        file.truncate(50 * 2**30)  # sparse: 50 GB that reading would have to allocate
    opened = []

    class CountingFile:
        """The opened file, counting the bytes read from it."""

        def __init__(self, file):
            self.file, self.bytes_read = file, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def fileno(self):
            return self.file.fileno()

        def read(self, size=-1):
            data = self.file.read(size)
            self.bytes_read += len(data)
            return data

    def counting_open(*args, **kwargs):
        opened.append(CountingFile(open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(syntax_module, "open", counting_open, raising=False)
    start = time.perf_counter()
    with pytest.raises(LogicError, match=re.escape(f"{path}: the logic file is larger than 1048576 bytes")):
        compile_file(path, use_cache=False)
    assert [file.bytes_read for file in opened] == [0]  # its size came from the file system, no byte of it
    assert time.perf_counter() - start < 30  # only a hang fails this


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_endless_device_is_refused():
    with pytest.raises(LogicError, match=r"^/dev/zero: the logic file is larger than 1048576 bytes"):
        compile_file("/dev/zero", use_cache=False)


def test_logic_file_size_limit_is_exact(tmp_path, monkeypatch):
    text = "concept a : 0..9\nlabel s : 0..9\nconstraint s == a\n"
    path = _write(tmp_path, text)
    monkeypatch.setattr(syntax_module, "MAX_LOGIC_FILE_BYTES", len(text))
    assert compile_file(path, use_cache=False).model_count == 10
    monkeypatch.setattr(syntax_module, "MAX_LOGIC_FILE_BYTES", len(text) - 1)
    with pytest.raises(LogicError, match=f"larger than {len(text) - 1} bytes"):
        compile_file(path, use_cache=False)


# ----------------------------------------------------------------------------- knowledge without labels
def test_knowledge_without_labels_has_nothing_to_learn_from(tmp_path):
    path = _write(tmp_path, "concept a : 0..9\nconcept b : 0..9\nconstraint a != b\n")
    compiled = compile_file(path, use_cache=False)
    with pytest.raises(LogicError, match=re.escape(f"{path}: declares no label: nothing to learn from")):
        require_labels(compiled)
    require_labels(compile_file(ADDITION, use_cache=False))  # addition has labels: no error


# ----------------------------------------------------------------------------- the brute-force reference
def test_brute_force_agrees_with_enumeration(tmp_path):
    text = ("concept a : 0..3\nconcept b : 0..3\nhidden h : 0..1\nlabel s : 0..6\n"
            "constraint s == a + b\nconstraint h == (a > b)\nconcept free : 0..2\n")
    knowledge = load_knowledge(_write(tmp_path, text))
    brute_force = BruteForce(knowledge)
    assert brute_force.count_models(10**6) == 16 * 3
    models = brute_force.models(10**6)
    assert len(models) == 48 and brute_force.satisfied(models).all()
    a, b, h, s = (knowledge.variable(name).id for name in ("a", "b", "h", "s"))
    assert sorted(set(map(tuple, models[:, [a, b, h, s]].tolist()))) == \
        sorted((x, y, int(x > y), x + y) for x in range(4) for y in range(4))
    completion = brute_force.complete({a: 3, b: 2})
    assert (completion[h], completion[s]) == (1, 5)
    assert brute_force.complete({a: 3, b: 2, s: 0}) is None
    assert brute_force.count_models(10) is None and brute_force.models(10) is None
