"""The compiler: exact model counts, satisfiability and label checks, vtrees and the disk cache."""
from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import numpy as np
import pytest

from nesy_gedi.circuit import KnowledgeCircuit
from nesy_gedi.circuit_cache import CacheWarning
from nesy_gedi.compiler import (VTREE_TYPES, CompiledKnowledge, compile_file, compile_knowledge_uncached,
                                exact_model_count)
from nesy_gedi.errors import LogicError
from nesy_gedi.logic.ground import Constraint, Knowledge, Variable
from random_logic import random_kb

LOGIC = Path(__file__).resolve().parents[1] / "logic"
ADDITION = LOGIC / "addition.logic"


def compile_text(tmp_path, text: str, params=None, name: str = "k.logic", **options) -> CompiledKnowledge:
    path = tmp_path / name
    path.write_text(text)
    options.setdefault("use_cache", False)
    return compile_file(path, params, **options)


def compile_error(tmp_path, text: str, line: int | None) -> str:
    path = tmp_path / "k.logic"
    path.write_text(text)
    with pytest.raises(LogicError) as info:
        compile_file(path, use_cache=False)
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(info.value).startswith(prefix), str(info.value)
    return str(info.value)[len(prefix):]


# ----------------------------------------------------------------------------- model counts
def test_model_count_of_random_knowledge_equals_brute_force(tmp_path):
    rng = random.Random(42)
    counted = 0
    for case in range(40):
        kb = random_kb(rng)
        models = kb.models()
        path = tmp_path / f"kb{case}.logic"
        path.write_text(kb.text)
        if not models:
            with pytest.raises(LogicError):
                compile_file(path, use_cache=False)
            continue
        compiled = compile_file(path, use_cache=False)
        assert compiled.model_count == len(models), kb.text
        manager, root = compiled.sdd()
        assert exact_model_count(manager, root) == root.global_model_count() == len(models)
        counted += 1
    assert counted >= 20


@pytest.mark.parametrize("name, params, count", [
    ("addition", {"N": 1}, 100),
    ("addition", {"N": 2}, 10_000),
    ("product", {}, 100),
    ("parity", {}, 10_000),
    ("parity", {"K": 1}, 10),
    ("sum_of_digits", {}, 1000),
    ("sum_of_digits", {"K": 5}, 100_000),
])
def test_example_files_compile(name, params, count):
    compiled = compile_file(LOGIC / f"{name}.logic", params, use_cache=False)
    assert compiled.model_count == count  # hidden variables and labels are functions of the concepts
    summary = compiled.summary()
    assert summary["model_count"] == count and summary["cache_hit"] is False
    assert len(summary["variables"]) == len(compiled.knowledge.variables)


def test_model_count_is_exact_beyond_64_bits():
    compiled = compile_file(ADDITION, {"N": 15}, use_cache=False)
    assert compiled.model_count == 10**30
    manager, root = compiled.sdd()
    assert root.global_model_count() != 10**30  # PySDD's own counter wraps around at 2**64


def test_blocks_vtree_keeps_addition_linear_and_shallow():
    sizes, depths = {}, {}
    for n in (8, 16, 32):
        compiled = compile_file(ADDITION, {"N": n}, use_cache=False)
        sizes[n] = compiled.sdd_size
        depths[n] = len(KnowledgeCircuit(compiled, compile_module=False).module.layers)
        assert compiled.model_count == 10 ** (2 * n)
    assert sizes[32] / sizes[16] < 2.2 and sizes[16] / sizes[8] < 2.2  # linear in N
    assert depths[32] <= 3 * 32 + 20  # layers grow with the number of columns, not of literals


# ----------------------------------------------------------------------------- satisfiability and labels
def test_unsatisfiable_knowledge_is_reported_at_the_constraint_that_made_it_false(tmp_path):
    text = ("concept a : 0..9\nconcept b : 0..9\nconstraint a < b\n\n"
            "# b is at most 5\nconstraint b <= 5\nconstraint a + b == 12\n")
    message = compile_error(tmp_path, text, line=7)
    assert message == ("the knowledge is unsatisfiable: no assignment satisfies this constraint "
                       "together with the ones before it")


def test_label_that_is_not_a_function_is_reported_at_its_declaration(tmp_path):
    text = "concept a : 0..9\n\nlabel s : 0..1\nlabel t : 0..9\nconstraint t == a\nconstraint s <= a\n"
    message = compile_error(tmp_path, text, line=3)
    assert message.startswith("label s is not a function of the concepts: some concept assignment allows "
                              "several values of it (19 concept/label combinations for 10 concept assignments)")
    # A label that no constraint mentions is free, so not a function either.
    assert "label u is not a function" in compile_error(tmp_path, "concept a : 0..9\nlabel u : 0..1\n", line=2)


def test_label_through_a_non_functional_hidden_variable(tmp_path):
    # h may be 0 or 1 for every a; a label that reads h is not determined by the concepts ...
    bad = "concept a : 0..3\nhidden h : 0..1\nlabel s : 0..4\nconstraint s == a + h\n"
    assert "label s is not a function" in compile_error(tmp_path, bad, line=3)
    # ... but hidden variables need not be functions themselves: they are summed out.
    good = "concept a : 0..3\nhidden h : 0..1\nlabel s : 0..1\nconstraint s == (a > 1)\nconstraint h <= a\n"
    compiled = compile_text(tmp_path, good)
    assert compiled.model_count == 1 + 2 + 2 + 2


def test_unknown_vtree_type(tmp_path):
    with pytest.raises(LogicError, match=r"unknown vtree type 'left' \(choose from blocks, block-tree, right, balanced\)"):
        compile_file(ADDITION, vtree_type="left", use_cache=False)
    assert VTREE_TYPES == ("blocks", "block-tree", "right", "balanced")


def test_block_tree_is_shallow_where_the_block_chain_is_deep():
    # Every circuit layer is one batched torch operation: a carry chain of N columns gives the
    # chained blocks about 2N layers, the tree of blocks a number that grows with log N.
    layers = {}
    for vtree_type in ("blocks", "block-tree"):
        for n in (16, 64):
            compiled = compile_file(ADDITION, {"N": n}, vtree_type=vtree_type, use_cache=False)
            assert compiled.model_count == 10 ** (2 * n)
            layers[vtree_type, n] = len(KnowledgeCircuit(compiled, compile_module=False).module.layers)
    assert layers["blocks", 64] - layers["blocks", 16] >= 2 * (64 - 16) - 8  # about two layers per column
    assert layers["block-tree", 64] <= layers["block-tree", 16] + 8  # two more levels of the tree
    assert layers["block-tree", 64] * 5 < layers["blocks", 64]


@pytest.mark.parametrize("vtree_type", VTREE_TYPES)
def test_every_vtree_type_counts_the_same(vtree_type):
    assert compile_file(ADDITION, {"N": 3}, vtree_type=vtree_type, use_cache=False).model_count == 10**6


def test_compile_hand_built_knowledge():
    # The compiler also serves knowledge built in code (shortcuts.py): variables and tables.
    knowledge = Knowledge("<code>", {})
    for i in range(3):
        knowledge.variables.append(Variable(i, f"x[{i}]", "x", (i,), "concept", (0, 1, 2), 0))
    allowed = np.array([[p, q] for p in range(3) for q in range(3) if p != q], dtype=np.int32)
    knowledge.constraints.append(Constraint(0, "x[0] != x[1]", (0, 1), allowed))
    knowledge.constraints.append(Constraint(0, "x[1] != x[2]", (1, 2), allowed))
    manager, root, literal_of, num_literals, count = compile_knowledge_uncached(knowledge, "blocks")
    assert count == 3 * 2 * 2 and num_literals == 9 and len(literal_of) == 9
    knowledge.constraints.append(Constraint(5, "x[0] == x[2] == x[1]", (0, 2), np.array([[0, 0]], dtype=np.int32)))
    knowledge.constraints.append(Constraint(6, "x[1] == 0", (1,), np.array([[0]], dtype=np.int32)))
    with pytest.raises(LogicError, match=r"^<code>:6: the knowledge is unsatisfiable"):
        compile_knowledge_uncached(knowledge, "blocks")


# ----------------------------------------------------------------------------- the disk cache
def test_cache_hit_and_identical_results(tmp_path):
    first = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    second = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.directory == second.directory and first.directory.parent == tmp_path
    assert second.literal_of == first.literal_of
    assert (second.sdd_size, second.sdd_node_count, second.model_count, second.num_literals) == \
        (first.sdd_size, first.sdd_node_count, first.model_count, first.num_literals)
    manager, root = second.sdd()  # read back from disk
    assert exact_model_count(manager, root) == 10_000
    # Explicitly passing the default value is the same entry.
    assert compile_file(ADDITION, {"N": 1}, cache_dir=tmp_path).directory == \
        compile_file(ADDITION, None, cache_dir=tmp_path).directory


def test_cache_key_depends_on_params_text_and_vtree(tmp_path):
    cache = tmp_path / "cache"
    two = compile_file(ADDITION, {"N": 2}, cache_dir=cache)
    three = compile_file(ADDITION, {"N": 3}, cache_dir=cache)
    right = compile_file(ADDITION, {"N": 2}, vtree_type="right", cache_dir=cache)
    assert len({two.directory, three.directory, right.directory}) == 3
    assert not three.cache_hit and three.model_count == 10**6
    copy = tmp_path / "addition.logic"
    copy.write_text(ADDITION.read_text())
    assert compile_file(copy, {"N": 2}, cache_dir=cache).cache_hit  # same text, other path: same entry
    copy.write_text(ADDITION.read_text() + "\n# edited\n")
    edited = compile_file(copy, {"N": 2}, cache_dir=cache)
    assert not edited.cache_hit and edited.directory != two.directory


@pytest.mark.parametrize("damage", ["meta", "sdd", "empty-meta"])
def test_damaged_cache_entry_is_rebuilt(tmp_path, damage):
    first = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    if damage == "meta":
        (first.directory / "meta.json").write_text("{not json")
    elif damage == "empty-meta":
        (first.directory / "meta.json").write_text(json.dumps({}))
    else:
        (first.directory / "knowledge.sdd").unlink()
    with pytest.warns(CacheWarning, match=f"circuit cache entry {first.directory} failed verification"):
        rebuilt = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    assert not rebuilt.cache_hit and rebuilt.directory == first.directory
    again = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    assert again.cache_hit
    manager, root = again.sdd()
    assert exact_model_count(manager, root) == 10_000
    assert [p.name for p in tmp_path.iterdir()] == [first.directory.name]  # no staging folders left


def test_uncached_compilation_cleans_up_its_files(tmp_path):
    compiled = compile_file(ADDITION, {"N": 1}, cache_dir=tmp_path, use_cache=False)
    directory = compiled.directory
    assert compiled.sdd_file.is_file() and not list(tmp_path.iterdir())
    circuit = KnowledgeCircuit(compiled, compile_module=False)
    del compiled
    gc.collect()
    assert directory.is_dir()  # the circuit still holds the compiled knowledge
    del circuit
    gc.collect()
    assert not directory.exists()


def test_logic_examples_in_the_docs_compile(tmp_path):
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "logic.md").read_text()
    blocks = [body for language, body in re.findall(r"^```(\w*)\n(.*?)^```", doc, re.S | re.M)
              if not language and "concept" in body]
    assert len(blocks) >= 7
    for number, body in enumerate(blocks):
        compiled = compile_text(tmp_path, body, name=f"doc{number}.logic")
        assert compiled.model_count > 0


def test_compile_errors_carry_the_path(tmp_path):
    with pytest.raises(LogicError, match=r"missing\.logic: logic file not found"):
        compile_file(tmp_path / "missing.logic", use_cache=False)
    assert "unknown parameter 'M'" in str(pytest.raises(LogicError, compile_file, ADDITION, {"M": 1},
                                                        use_cache=False).value)
