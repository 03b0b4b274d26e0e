"""Fuzzing the logic pipeline: malformed files either compile or raise a clean LogicError.

Thousands of generated files (mutations of the shipped ones, token soup from the
language's vocabulary, random programs with extreme numbers, random unicode and bytes)
go through `compile_file(..., use_cache=False)`. The only accepted outcomes are success
and a LogicError whose message starts with `<path>:<line>: ` (a line of the file) or
`<path>: `; anything else (RecursionError, MemoryError, IndexError, a numpy or PySDD
error, a hang past the 60 s deadline) fails.

The grounding limits are lowered for the fuzz (see `_small_limits`) so that the files
that merely ask for a lot of work stop in well under a second; test_logic_syntax.py
checks that the default limits stop runaway files too. Runs are derandomized so CI is
reproducible; set NESY_GEDI_FUZZ_SCALE=10 (for example) for a longer, randomized hunt.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nesy_gedi.compiler import compile_file
from nesy_gedi.errors import LogicError
from nesy_gedi.logic import ground as ground_module

LOGIC = Path(__file__).resolve().parents[1] / "logic"
SHIPPED = {path.name: path.read_text() for path in sorted(LOGIC.glob("*.logic"))}

SCALE = float(os.environ.get("NESY_GEDI_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int):
    # The lowered limits bound each example's work; the deadline only catches a hang.
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=60_000, derandomize=SCALE == 1,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def _small_limits():
    small = {"MAX_DOMAIN_SIZE": 500, "MAX_SCOPE_ASSIGNMENTS": 100_000, "MAX_TOTAL_ASSIGNMENTS": 1_000_000,
             "MAX_GROUND_CONSTRAINTS": 300, "MAX_FAMILY_SIZE": 300, "MAX_VARIABLES": 300, "MAX_BINDINGS": 20_000}
    saved = {name: getattr(ground_module, name) for name in small}
    for name, value in small.items():
        setattr(ground_module, name, value)
    yield
    for name, value in saved.items():
        setattr(ground_module, name, value)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check(path: Path, text_lines: int, params=None) -> None:
    """Compile; accept success or a LogicError located in this file."""
    try:
        compile_file(path, params, use_cache=False)
    except LogicError as error:
        message = str(error)
        match = re.match(re.escape(str(path)) + r"(?::(\d+))?: \S", message)
        assert match, f"badly located error: {message!r}"
        if match.group(1) is not None:
            assert 1 <= int(match.group(1)) <= text_lines + 1, message


def check_text(workdir: Path, text: str, params=None) -> None:
    path = workdir / "fuzz.logic"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check(path, text.count("\n") + 1, params)


# ----------------------------------------------------------------------------- vocabulary
KEYWORDS = ["param", "concept", "label", "hidden", "constraint", "forall", "in", "where", "and", "or", "not",
            "true", "false", "sum", "if", "then", "else", "min", "max", "abs"]
OPERATORS = ["<->", "->", "..", "//", "==", "!=", "<=", ">=", "-", "+", "*", "%", "<", ">", "=", "(", ")", "[", "]",
             "{", "}", ",", ":"]
NAMES = ["a", "b", "s", "carry", "d", "p", "N", "K", "i", "j", "x", "odd", "total"]
NUMBERS = ["0", "1", "2", "9", "10", "81", "-1", "100000", "999999999", "9007199254740993",
           "12345678901234567890123"]
VOCABULARY = KEYWORDS + OPERATORS + NAMES + NUMBERS + ["\n", "\n", "#", " "]
_LEXEME = re.compile(r"\s+|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[0-9]+|<->|->|\.\.|//|==|!=|<=|>=|.", re.S)

MUTATIONS = ["delete", "duplicate", "insert", "replace", "swap", "delete-char", "insert-char", "number", "newline"]
mutation = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10_000), st.integers(0, 10_000),
                     st.sampled_from(VOCABULARY), st.characters(blacklist_categories=("Cs",)),
                     st.one_of(st.integers(-20, 20), st.integers(-10**12, 10**12)))


def mutate(text: str, mutations: list) -> str:
    lexemes = _LEXEME.findall(text)
    for kind, i, j, word, char, number in mutations:
        if not lexemes:
            lexemes = [word]
        i, j = i % len(lexemes), j % len(lexemes)
        if kind == "delete":
            del lexemes[i]
        elif kind == "duplicate":
            lexemes.insert(i, lexemes[i])
        elif kind == "insert":
            lexemes.insert(i, f" {word} ")
        elif kind == "replace":
            lexemes[i] = word
        elif kind == "swap":
            lexemes[i], lexemes[j] = lexemes[j], lexemes[i]
        elif kind == "number":
            numbers = [k for k, lexeme in enumerate(lexemes) if lexeme.isdigit()]
            if numbers:
                lexemes[numbers[i % len(numbers)]] = str(number)
        elif kind == "newline":
            lexemes.insert(i, "\n")
        else:
            joined = "".join(lexemes)
            position = i % (len(joined) + 1)
            if kind == "delete-char":
                joined = joined[:position] + joined[position + 1:]
            else:
                joined = joined[:position] + char + joined[position:]
            lexemes = _LEXEME.findall(joined)
    return "".join(lexemes)


# ----------------------------------------------------------------------------- strategies
@fuzz_settings(300)
@given(name=st.sampled_from(sorted(SHIPPED)), mutations=st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_mutated_shipped_files(workdir, name, mutations):
    check_text(workdir, mutate(SHIPPED[name], mutations))


@fuzz_settings(150)
@given(name=st.sampled_from(sorted(SHIPPED)),
       params=st.dictionaries(st.sampled_from(["N", "K", "M"]),
                              st.one_of(st.integers(-3, 12), st.integers(-10**18, 10**18)), max_size=2))
def test_fuzz_parameter_overrides(workdir, name, params):
    check_text(workdir, SHIPPED[name], params)


@fuzz_settings(300)
@given(tokens=st.lists(st.sampled_from(VOCABULARY), max_size=60), joiner=st.sampled_from([" ", "", "\n"]))
def test_fuzz_token_soup(workdir, tokens, joiner):
    check_text(workdir, joiner.join(tokens))


# Mostly small numbers, sometimes extreme ones (a uniform pick from this list).
_numbers = st.sampled_from(list(range(-2, 10)) * 3 + [-10**6, 1000, 10**9, 2**53 + 1])


def _expression(names: list):
    atoms = st.one_of(_numbers.map(str), st.sampled_from(names), st.sampled_from(names), st.sampled_from(names),
                      st.tuples(st.sampled_from(names), _numbers).map(lambda t: f"{t[0]}[{t[1]}]"),
                      st.sampled_from(["true", "false", "i", "j", "N"]),
                      st.sampled_from(names).map(lambda n: f"{n}[j]"))
    return st.recursive(atoms, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%", "==", "!=", "<", "<=", "and", "or", "->",
                                          "<->"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"(not ({e}))"), inner.map(lambda e: f"-({e})"),
        st.tuples(inner, inner).map(lambda t: f"min({t[0]}, {t[1]})"),
        inner.map(lambda e: f"abs({e})"),
        st.tuples(inner, inner, inner).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]})"),
        st.tuples(_numbers, _numbers, inner).map(lambda t: f"sum(i in {t[0]}..{t[1]}: {t[2]})"),
    ), max_leaves=8)


@st.composite
def random_programs(draw):
    """Mostly well-formed programs with random ranges, domains and constraints."""
    lines = [f"param N = {draw(_numbers)}"]
    names = []
    for k in range(draw(st.integers(1, 4))):
        role = "concept" if k == 0 else draw(st.sampled_from(["concept", "hidden", "label"]))
        name = f"v{k}"
        if draw(st.booleans()):
            name += draw(st.sampled_from(["[i in 0..N-1]", "[i in 0..N]", "[i in 1..2]"]) | _numbers.map(
                lambda n: f"[i in 0..{n}]"))
        domain = draw(st.sampled_from(["0..9", "0..1", "0..N", "-2..2", "{1, 3, 5}", "0..9*(i+1)"])
                      | st.tuples(_numbers, _numbers).map(lambda t: f"{t[0]}..{t[1]}")
                      | st.tuples(_numbers, _numbers).map(lambda t: f"{{{t[0]}, {t[1]}}}"))
        lines.append(f"{role} {name} : {domain}")
        names.append(f"v{k}")
    for _ in range(draw(st.integers(0, 4))):
        body = draw(_expression(names))
        if draw(st.booleans()):
            body = f"forall j in {draw(_numbers)}..{draw(st.sampled_from(['N-1', 'N']) | _numbers.map(str))}: {body}"
        lines.append(f"constraint {body}")
    return "\n".join(lines) + "\n"


@fuzz_settings(150)
@given(text=random_programs())
def test_fuzz_random_programs(workdir, text):
    check_text(workdir, text)


@fuzz_settings(150)
@given(text=st.text(max_size=200))
def test_fuzz_unicode(workdir, text):
    check_text(workdir, text)


@fuzz_settings(50)
@given(data=st.binary(max_size=200))
def test_fuzz_bytes(workdir, data):
    path = workdir / "bytes.logic"
    path.write_bytes(data)
    check(path, data.count(b"\n") + 1)


# ----------------------------------------------------------------------------- regressions found by fuzzing
@pytest.mark.parametrize("text", [
    "concept a : 0..9\nconstraint a == 1 ->\n",
    "concept a : 0..9\n)\n",
    "concept a : 0..9\nconstraint (a\n",
    "concept a[i in 0..9999999] : 0..1\n",
    "concept a : 0..9\nconstraint forall i in 0..9999, j in 0..9999: a != i\n",
    "concept a : 0..9\nconstraint sum(i in 0..9999, j in 0..9999: a) > 0\n",
    "concept a : 0..9\nconstraint a * 9007199254740992 * 9007199254740992 > 0\n",
    "concept a : 0..9\nconstraint a // (a - a) == 0\n",
    "concept a : 0..9\nconstraint " + "(" * 5000 + "a" + ")" * 5000 + " == 1\n",
    "concept a : 0..9\nconstraint a == " + "+".join(["1"] * 5000) + "\n",
    "concept a : 0..9\nlabel s : 0..N\n",
    "param N = 0\nconcept a[i in 0..N-1] : 0..9\n",
    "\ufeff",
    "concept a : 0..9\u2028constraint a == 1\n",
])
def test_fuzz_regressions(workdir, text):
    check_text(workdir, text)


# ----------------------------------------------------------------------------- cache entries
CACHED_FILES = ("knowledge.sdd", "knowledge.vtree", "meta.json")


@pytest.fixture(scope="module")
def genuine_entry(tmp_path_factory):
    """The files of a verified cache entry (addition, N=1), and the circuit's reference outputs."""
    cache = tmp_path_factory.mktemp("genuine")
    compiled = compile_file(LOGIC / "addition.logic", {"N": 1}, cache_dir=cache)
    files = {name: (compiled.directory / name).read_bytes() for name in CACHED_FILES}
    return compiled.directory.name, files, _circuit_outputs(compiled)


def _circuit_outputs(compiled):
    import torch

    from nesy_gedi.circuit import KnowledgeCircuit

    generator = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(5, 2, 10, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.tensor([[0, 9], [1, 8], [-1, 5], [0, -1], [1, 0]])
    return KnowledgeCircuit(compiled, compile_module=False)(log_probs, labels)


@settings(max_examples=max(1, int(150 * SCALE)), deadline=None, derandomize=SCALE == 1, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=st.sampled_from(CACHED_FILES), mutations=st.lists(mutation, min_size=1, max_size=4),
       resealed=st.booleans())
def test_fuzz_cache_entries(workdir, genuine_entry, name, mutations, resealed):
    """A mutated cache entry (resealed: with its manifest rewritten to match, as a forgery would
    be) is either rejected with a CacheWarning and recompiled, or accepted; either way there is
    no crash and the circuit computes exactly what the genuine one does."""
    import torch

    from nesy_gedi import circuit_cache

    key, files, expected = genuine_entry
    cache = workdir / "cache"
    entry = cache / key
    entry.mkdir(parents=True, exist_ok=True)
    contents = dict(files)
    contents[name] = mutate(files[name].decode("ascii"), mutations).encode("utf-8", "surrogatepass")
    for file_name, data in contents.items():
        (entry / file_name).write_bytes(data)
    (entry / "manifest.json").write_bytes(circuit_cache._manifest(key, contents if resealed else files))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = compile_file(LOGIC / "addition.logic", {"N": 1}, cache_dir=cache)
    notices = [w for w in caught if issubclass(w.category, circuit_cache.CacheWarning)]
    assert compiled.cache_hit != bool(notices) and len(notices) <= 1
    assert compiled.model_count == 100
    torch.testing.assert_close(_circuit_outputs(compiled), expected, atol=1e-12, rtol=1e-12)


@settings(max_examples=max(1, int(150 * SCALE)), deadline=None, derandomize=SCALE == 1, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(-4, 4).filter(bool), st.booleans()),
                        min_size=1, max_size=3))
def test_fuzz_numbers_in_a_resealed_sdd(workdir, genuine_entry, changes):
    """Well-formed SDD files with a few numbers nudged or negated (ids, vtree nodes, literals,
    element counts) and the manifest resealed: the structural and semantic checks must stop
    every one that would crash libsdd or KLay or change an answer."""
    import torch

    from nesy_gedi import circuit_cache

    key, files, expected = genuine_entry
    lines = files["knowledge.sdd"].decode("ascii").split("\n")
    body = [i for i, line in enumerate(lines) if line[:1] in ("F", "T", "L", "D")]
    for where, delta, negate in changes:
        index = body[where % len(body)]
        fields = lines[index].split(" ")
        field = 1 + where // len(body) % (len(fields) - 1)
        fields[field] = str(-int(fields[field]) if negate else int(fields[field]) + delta)
        lines[index] = " ".join(fields)
    contents = {**files, "knowledge.sdd": "\n".join(lines).encode("ascii")}
    entry = workdir / "resealed" / key
    entry.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (entry / name).write_bytes(data)
    (entry / "manifest.json").write_bytes(circuit_cache._manifest(key, contents))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", circuit_cache.CacheWarning)
        compiled = compile_file(LOGIC / "addition.logic", {"N": 1}, cache_dir=entry.parent)
    assert compiled.model_count == 100
    torch.testing.assert_close(_circuit_outputs(compiled), expected, atol=1e-12, rtol=1e-12)
