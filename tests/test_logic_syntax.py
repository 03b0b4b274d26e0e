"""Logic files: parser and grounder behaviour, and every user-facing error with its `path:line:`."""
from __future__ import annotations

import time

import numpy as np
import pytest

from nesy_gedi.compiler import compile_file
from nesy_gedi.errors import LogicError
from nesy_gedi.logic import ground as ground_module
from nesy_gedi.logic.ground import evaluate_condition, load_knowledge
from nesy_gedi.logic.syntax import MAX_DEPTH, MAX_NESTING, ConstraintDecl, parse, parse_expression

DIGITS = "concept a : 0..9\nconcept b : 0..9\n"


def write(tmp_path, text: str, name: str = "k.logic"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def logic_error(tmp_path, text: str, params=None, *, compile: bool = False, line: int | None) -> str:
    """The message of the LogicError that the file raises; checks its `path:line: ` prefix."""
    path = write(tmp_path, text)
    with pytest.raises(LogicError) as info:
        if compile:
            compile_file(path, params, use_cache=False)
        else:
            load_knowledge(path, params)
    message = str(info.value)
    prefix = f"{path}: " if line is None else f"{path}:{line}: "
    assert message.startswith(prefix), message
    assert info.value.line == line
    return message[len(prefix):]


# ----------------------------------------------------------------------------- parsing
def test_parse_addition_statements_and_text():
    program = parse("param N = 2\nconcept a[i in 0..N-1] : 0..9\n"
                    "constraint forall i in 0..N-1:   a[i]  >=  0   # trailing comment\n", "x.logic")
    assert [type(s).__name__ for s in program.statements] == ["ParamDecl", "VariableDecl", "ConstraintDecl"]
    constraint = program.statements[2]
    assert isinstance(constraint, ConstraintDecl)
    assert constraint.line == 3
    # The original source text (spacing kept, comment dropped), not tokens joined by spaces.
    assert constraint.text == "forall i in 0..N-1:   a[i]  >=  0"


def test_constraint_text_over_several_lines():
    program = parse("concept a : 0..9\nconstraint (a +   # first\n   a[0]) == 2\nconstraint a == 1\n")
    assert program.statements[1].text == "(a + a[0]) == 2"
    assert program.statements[1].line == 2
    assert program.statements[2].line == 4


def test_constraint_text_in_error_messages(tmp_path):
    message = logic_error(tmp_path, "concept a : 0..9\nconstraint carry_free ==\n", line=2)
    assert "expected a value" in message
    message = logic_error(tmp_path, "param N = 2\nconcept a : 0..9\nconstraint forall i in 0..N:  i < 2\n", line=3)
    assert message == "constraint is false (for i = 2): forall i in 0..N:  i < 2"


def test_precedence_and_associativity(tmp_path):
    def value(expression: str) -> int:
        path = write(tmp_path, f"param V = {expression}\nconcept a : 0..1\n")
        return load_knowledge(path).params["V"]

    assert value("1 + 2 * 3") == 7
    assert value("(1 + 2) * 3") == 9
    assert value("10 - 3 - 2") == 5
    assert value("-7 // 2") == -4  # floor division
    assert value("-7 % 3") == 2  # the sign of the divisor, like Python
    assert value("7 % -3") == -2
    assert value("2 * -3") == -6
    assert value("min(3, 1, 2) + max(4, 5) + abs(-6)") == 12
    assert value("(1 < 2) + (2 < 1) + (3 == 3)") == 2  # conditions count as 0/1
    assert value("if 1 < 2 then 10 else 20") == 10
    assert value("sum(i in 1..4: i * i)") == 30
    assert value("sum(i in 1..10 where i % 2 == 0: 1)") == 5
    assert value("sum(i in 1..3, j in i..3: 1)") == 6
    assert value("(true -> false) + (false -> false) + (true <-> true) + (not true or true)") == 3
    # -> is right-associative: false -> (true -> false) is true; (false -> true) -> false is false.
    assert value("0 + (false -> true -> false)") == 1
    assert value("0 + (not 1 == 2)") == 1
    assert value("0 + (1 == 1 and 2 == 3 or 4 == 4)") == 1
    assert value("0 + (false and true or true)") == 1  # and binds tighter than or
    assert value("0 + (true or true -> false)") == 0  # -> binds loosest


def test_parse_expression_for_task_files():
    node = parse_expression("a[0] + a[1] <= 9\n", "task.yaml")
    assert type(node).__name__ == "Binary"
    with pytest.raises(LogicError, match=r"^task.yaml:1: unexpected '\)'|^task.yaml:1: '\)' closes"):
        parse_expression("a[0])", "task.yaml")


# ----------------------------------------------------------------------------- syntax errors
@pytest.mark.parametrize("text, line, expected", [
    ("concept a : 0..9\nconstraint a ==\n", 2, "expected a value, a variable or '(' but found end of line"),
    ("concept a 0..9\n", 1, "expected ':' and a domain after the variable a"),
    ("concept a : 0..9 $\n", 1, "unexpected character '$'"),
    ("concept a : 0..9\nconstraint a == 1.5\n", 2, "unexpected character '.'"),
    ("concept a : 0..9\nconstrain a == 1\n", 2, "expected a statement (param, concept, label, hidden or constraint)"),
    ("concept a : 0..9\nconstraint a == 1 a == 2\n", 2, "unexpected 'a' after the end of the statement"),
    ("concept a : 0..9\nconstraint 0 < a < 5\n", 2, "comparisons cannot be chained; combine them with 'and'"),
    ("concept a : 0..9\nconstraint a == 1 == 1\n", 2, "comparisons cannot be chained"),
    ("concept a : 0..9\nconstraint a = 5\n", 2, "use '==' to compare"),
    ("param N == 5\n", 1, "expected '=' after the parameter name"),
    ("concept sum : 0..9\n", 1, "'sum' is a reserved word and cannot be used as a variable name"),
    ("param in = 3\n", 1, "'in' is a reserved word and cannot be used as a parameter name"),
    ("concept a[forall in 0..1] : 0..9\n", 1, "'forall' is a reserved word and cannot be used as an index name"),
    ("concept a : 0..9\nconstraint (a == 1\nconstraint a == 2\n", 2, "'(' is never closed"),
    ("concept a : 0..9\nconstraint a == 1)\n", 2, "')' closes no open bracket"),
    ("concept a[i in 0..1] : 0..9\n\nconstraint (a[0] == 1]\n", 3, "']' does not match the '('"),
    ("concept a : 0..9\nconstraint a == 1234567890123456789012\n", 2, "number 12345678901234567890... is too large"),
    ("concept a : 0..9\nconstraint a == 9007199254740993\n", 2, "number 9007199254740993 is too large"),
    ("concept a : 0..9\nconstraint abs(a, a) == 1\n", 2, "abs takes exactly one argument"),
    ("concept a : 0..9\nconstraint a == then\n", 2, "unexpected keyword 'then' in an expression"),
    ("concept a : 0..9\nconstraint 1 + if a == 1 then 1 else 2 == 2\n", 2,
     "inside a larger expression, write (if ... then ... else ...) in parentheses"),
    ("concept a : 0..9\nconstraint sum(i 0..2: a) == 1\n", 2, "expected 'in' after the index i"),
    ("concept a : 0..9\nconstraint forall i in 0..2 a == i\n", 2, "expected ':' after the forall binders"),
    ("concept a : {1, 2\n", 1, "'{' is never closed"),
])
def test_syntax_errors(tmp_path, text, line, expected):
    assert expected in logic_error(tmp_path, text, line=line)


def test_statement_continues_while_a_bracket_is_open(tmp_path):
    knowledge = load_knowledge(write(tmp_path, "concept a[i in 0..1] : 0..9\nconstraint (a[0] +\n  a[1]\n) == 3\n"
                                               "label s : 0..1\n"
                                               "constraint s == (a[0] > 2\n)\n"))
    assert [c.line for c in knowledge.constraints] == [2, 6]


def test_line_numbers_after_multiline_statements(tmp_path):
    text = "concept a : 0..9\nconstraint (a\n ==\n 1)\n\n# comment\nconstraint b == 1\n"
    assert logic_error(tmp_path, text, line=7) == "unknown name 'b'"


@pytest.mark.parametrize("text, expected", [
    ("constraint " + "(" * 10000 + "a == 1" + ")" * 10000, f"nested deeper than {MAX_NESTING} levels"),
    ("constraint " + "not " * 10000 + "a == 1", f"nested deeper than {MAX_NESTING} levels"),
    ("constraint a == " + "-" * 10000 + "1", f"nested deeper than {MAX_NESTING} levels"),
    ("constraint a == " + " + ".join(["1"] * 10000), f"more than {MAX_DEPTH} levels deep"),
    ("constraint " + " -> ".join(["a == 1"] * 10000), f"more than {MAX_DEPTH} levels deep"),
    ("constraint " + " and ".join(["a == 1"] * 10000), f"more than {MAX_DEPTH} levels deep"),
    ("constraint a == " + "a[" * 10000 + "0" + "]" * 10000, f"nested deeper than {MAX_NESTING} levels"),
])
def test_deep_nesting_is_a_clean_error(tmp_path, text, expected):
    # Never a RecursionError: hostile or generated files fail with a LogicError.
    assert expected in logic_error(tmp_path, "concept a : 0..9\n" + text + "\n", line=2)


def test_nesting_just_under_the_limits_works(tmp_path):
    depth = MAX_NESTING - 2
    text = "concept a : 0..9\nconstraint " + "(" * depth + "a == 1" + ")" * depth + "\n"
    assert load_knowledge(write(tmp_path, text)).constraints[0].allowed.tolist() == [[1]]
    chain = " + ".join(["a"] * (MAX_DEPTH // 2))
    text = f"concept a : 0..9\nconstraint {chain} == {MAX_DEPTH // 2 * 3}\n"
    assert load_knowledge(write(tmp_path, text)).constraints[0].allowed.tolist() == [[3]]


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.logic"
    path.write_bytes("\ufeffconcept a : 0..9\r\nlabel s : 0..9\r\nconstraint s == a\r\n".encode())
    assert len(load_knowledge(path).constraints) == 1


# ----------------------------------------------------------------------------- file-level errors
def test_missing_and_unreadable_files(tmp_path):
    assert logic_error(tmp_path, "", line=None) == \
        "the file declares no concept (the variables that the network predicts, one per input image, " \
        "are declared with `concept`)"
    with pytest.raises(LogicError, match=r"nope\.logic: logic file not found$"):
        load_knowledge(tmp_path / "nope.logic")
    binary = tmp_path / "binary.logic"
    binary.write_bytes(b"concept a : 0..9\n\xff\xfe\n")
    with pytest.raises(LogicError, match=r"binary\.logic: logic file is not UTF-8 text$"):
        load_knowledge(binary)
    with pytest.raises(LogicError, match=r": is a directory, not a logic file$"):
        load_knowledge(tmp_path)


def test_unknown_parameter_override(tmp_path):
    message = logic_error(tmp_path, "param N = 2\nconcept a : 0..9\n", {"M": 3}, line=None)
    assert message == "unknown parameter 'M' (the file declares: N)"
    message = logic_error(tmp_path, "concept a : 0..9\n", {"N": 3}, line=None)
    assert message == "unknown parameter 'N' (the file declares: none)"


def test_parameter_overrides(tmp_path):
    path = write(tmp_path, "param N = 2\nparam M = N + 1\nconcept a[i in 0..M-1] : 0..9\n")
    assert load_knowledge(path).params == {"N": 2, "M": 3}
    knowledge = load_knowledge(path, {"N": 5})
    assert knowledge.params == {"N": 5, "M": 6}
    assert [v.name for v in knowledge.concepts] == [f"a[{i}]" for i in range(6)]
    assert "must be an integer, got '5'" in logic_error(tmp_path, "param N = 2\nconcept a : 0..9\n", {"N": "5"},
                                                        line=1)
    assert "must be an integer, got True" in logic_error(tmp_path, "param N = 2\nconcept a : 0..9\n",
                                                         {"N": True}, line=1)
    assert "too large" in logic_error(tmp_path, "param N = 2\nconcept a : 0..9\n", {"N": 2**60}, line=1)


# ----------------------------------------------------------------------------- names and scopes
@pytest.mark.parametrize("text, line, expected", [
    ("concept a : 0..9\nconstraint c == 1\n", 2, "unknown name 'c'"),
    ("concept a : 0..9\nconstraint c[0] == 1\n", 2, "unknown variable 'c'"),
    ("concept carry[i in 0..1] : 0..1\nconstraint carry[5] == 0\n", 2,
     "carry[5] does not exist (carry has indices 0..1)"),
    ("concept x[i in 0..2, j in 1..2] : 0..1\nconstraint x[0, 3] == 0\n", 2,
     "x[0, 3] does not exist (x has indices 0..2, 1..2)"),
    ("concept x[i in 0..-1] : 0..1\nconcept a : 0..1\nconstraint x[0] == 0\n", 3, "x[0] does not exist (x has no members)"),
    ("concept a[i in 0..1] : 0..9\nconstraint a[0, 1] == 0\n", 2, "a takes 1 index(es), got 2"),
    ("concept a[i in 0..1] : 0..9\nconstraint a == 0\n", 2, "a is a family; write a[...] with 1 index(es)"),
    ("concept a : 0..9\nconstraint a[0] == 0\n", 2, "a takes 0 index(es), got 1"),
    ("param N = 1\nconcept a : 0..9\nconstraint N[0] == 0\n", 3, "'N' is not a variable family and cannot be indexed"),
    ("concept a : 0..9\nconcept a : 0..3\n", 2, "variable 'a' is already declared on line 1"),
    ("param a = 1\nconcept a : 0..9\n", 2, "'a' is already a parameter"),
    ("concept a : 0..9\nparam a = 1\n", 2, "'a' is already a variable"),
    ("param N = 1\nparam N = 2\nconcept a : 0..1\n", 2, "parameter 'N' is declared twice"),
    ("param N = M\nparam M = 1\nconcept a : 0..1\n", 1, "unknown name 'M'"),
    ("param N = 2\nconcept a[N in 0..1] : 0..9\n", 2, "index 'N' shadows a parameter, variable or outer index"),
    ("concept a[i in 0..1] : 0..9\nconstraint forall i in 0..1, i in 0..1: a[i] == 1\n", 2, "index 'i' shadows"),
    ("concept a[i in 0..1] : 0..9\nconstraint a[a[0]] == 1\n", 2, "an index of a must be a constant"),
    ("concept a : 0..9\nparam N = a\n", 2, "the value of N must be a constant (parameters and indices only)"),
    ("concept a : 0..9\nconstraint forall i in 0..a: a == 1\n", 2, "the range of i must be a constant"),
    ("concept a : 0..9\nconstraint forall i in 0..2 where a: a == 1\n", 2, "the where-condition must be a constant"),
    ("concept a : 0..9\nconstraint forall i in 0..2 where i: a == i\n", 2, "the where-condition must be a condition"),
])
def test_name_and_scope_errors(tmp_path, text, line, expected):
    assert expected in logic_error(tmp_path, text, line=line)


def test_short_circuit_skips_unreachable_references(tmp_path):
    # With N = 0 the right side of -> names a[-1], which does not exist: it is never grounded.
    text = ("param N = 0\nconcept a[i in 0..N] : 0..9\n"
            "constraint N > 0 -> a[N-1] == 1\nconstraint N == 0 or a[N-1] == 1\n"
            "constraint (if N > 0 then a[N-1] else 3) == a[N]\n")
    knowledge = load_knowledge(write(tmp_path, text))
    assert len(knowledge.constraints) == 1 and knowledge.constraints[0].allowed.tolist() == [[3]]
    with pytest.raises(LogicError, match=r":3: a\[-1\] does not exist|:4:"):
        load_knowledge(write(tmp_path, text.replace("N > 0 ->", "N == 0 ->")))


# ----------------------------------------------------------------------------- domains
@pytest.mark.parametrize("text, line, expected", [
    ("concept a : 5..3\n", 1, "the domain of a 5..3 is empty"),
    ("concept a : 0..0\n", 1, "the domain of a has a single value; declare a parameter instead"),
    ("concept a : {4}\n", 1, "the domain of a has a single value"),
    ("concept a : {1, 2, 1}\n", 1, "the domain of a lists a value twice"),
    ("concept a : 0..99999\n", 1, "the domain of a has 100000 values (at most 10000)"),
    ("concept a : 0..(1 == 1)\n", 1, "the domain of a must be an integer, not a condition"),
    ("concept a : 0..9\nconcept b : 0..a\n", 2, "the domain of b must be a constant"),
    ("concept a : 0..9\nlabel d : -9..9\nconstraint d == a - 9\n", 2,
     "the domain of d contains negative values, but a negative label value means 'not observed'"),
    ("concept a : 0..9\nconstraint a == 12\n", 2, "no assignment satisfies this constraint (a in 0..9): a == 12"),
    ("concept a : {1, 3, 5}\nconstraint a == 2\n", 2, "no assignment satisfies this constraint (a in {1, 3, 5})"),
    ("concept a[i in 0..2] : 0..9\nconstraint forall i in 0..2: a[i] < i\n", 2,
     "no assignment satisfies this constraint (for i = 0) (a[0] in 0..9): forall i in 0..2: a[i] < i"),
    ("concept a : 0..9\nconstraint false\n", 2, "constraint is false: false"),
    ("param N = 3\nconcept a : 0..9\nconstraint N < 3\n", 3, "constraint is false: N < 3"),
])
def test_domain_errors(tmp_path, text, line, expected):
    assert expected in logic_error(tmp_path, text, line=line)


def test_domains_may_depend_on_indices_and_value_sets(tmp_path):
    knowledge = load_knowledge(write(tmp_path, "concept t[i in 1..3] : 0..3*i\nconcept v : {7, -2, 3}\n"))
    assert [v.domain for v in knowledge.concepts] == [tuple(range(4)), tuple(range(7)), tuple(range(10)), (-2, 3, 7)]
    assert knowledge.variable("v").position(7) == 2


# ----------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("text, line, expected", [
    (DIGITS + "constraint a // b == 1\n", 3, "division by zero: the right side of '//' can be 0"),
    (DIGITS + "constraint a % (b - 3) == 1\n", 3, "division by zero: the right side of '%' can be 0"),
    ("param M = 1 // 0\nconcept a : 0..1\n", 1, "division by zero"),
    (DIGITS + "constraint a + 1\n", 3, "a constraint must be a condition (a comparison or a boolean), "
                                       "not an integer expression"),
    (DIGITS + "constraint a and b == 1\n", 3, "'and' needs a condition (e.g. x == 1), not an integer expression"),
    (DIGITS + "constraint not a\n", 3, "'not' needs a condition"),
    (DIGITS + "constraint (if a then 1 else 2) == b\n", 3, "'if' needs a condition"),
    ("param M = 99999999999 * 99999999999\nconcept a : 0..9\n", 1, "integer overflow: a value exceeds 2**53"),
    ("concept a : 0..9\nconstraint a * 4000000000000000 + a * 4000000000000000 > 0\n", 2, "integer overflow"),
])
def test_semantic_errors(tmp_path, text, line, expected):
    assert expected in logic_error(tmp_path, text, line=line)


def test_guarded_division_is_allowed(tmp_path):
    text = DIGITS + ("label q : 0..9\nconstraint q == (if b != 0 then a // b else 0)\n"
                     "constraint b != 0 -> a % b < 9\nconstraint b == 0 or a // b >= 0\n")
    knowledge = load_knowledge(write(tmp_path, text))
    q = knowledge.constraints[0]
    rows = {tuple(knowledge.variables[v].domain[p] for v, p in zip(q.scope, row)) for row in q.allowed.tolist()}
    names = [knowledge.variables[v].name for v in q.scope]
    assert names == ["q", "b", "a"]
    assert rows == {(a // b if b else 0, b, a) for a in range(10) for b in range(10)}


def test_tables_match_python_semantics(tmp_path):
    expression = "(a - 4) // (b + 1) * 2 + (a % 3) - min(a, b) + max(a, 2 * b) + abs(a - b) + (a > b) * 7"
    knowledge = load_knowledge(write(tmp_path, DIGITS + f"concept c : -60..60\nconstraint c == {expression}\n"))
    constraint = knowledge.constraints[0]
    rows = {tuple(knowledge.variables[v].domain[p] for v, p in zip(constraint.scope, row))
            for row in constraint.allowed.tolist()}
    expected = {((a - 4) // (b + 1) * 2 + (a % 3) - min(a, b) + max(a, 2 * b) + abs(a - b) + (a > b) * 7, a, b)
                for a in range(10) for b in range(10)}
    assert rows == expected


def test_tautologies_are_dropped_and_counted_conditions(tmp_path):
    text = ("concept x[i in 0..3] : 0..1\nconstraint sum(i in 0..3: x[i] == 1) == 2\n"
            "constraint forall i in 0..3: x[i] >= 0\n")
    knowledge = load_knowledge(write(tmp_path, text))
    assert len(knowledge.constraints) == 1
    assert len(knowledge.constraints[0].allowed) == 6


# ----------------------------------------------------------------------------- limits
@pytest.mark.parametrize("text, expected", [
    ("constraint forall i in 0..999999999: a != i",
     "the range 0..999999999 of i in the constraint has 1000000000 values"),
    ("constraint sum(i in 0..999999999: a) > 0", "the range 0..999999999 of i in sum(...) has"),
    ("constraint forall i in 0..99999, j in 0..99999: a != 11", "more than 100000 ground constraints"),
])
def test_runaway_grounding_stops_with_a_clear_error(tmp_path, text, expected):
    started = time.perf_counter()  # with the default limits
    assert expected in logic_error(tmp_path, "concept a : 0..9\n" + text + "\n", line=2)
    assert time.perf_counter() - started < 120  # only a hang fails this (the limit bounds the work)


@pytest.mark.parametrize("text", [
    "constraint sum(i in 0..99999, j in 0..99999: a) >= 0",
    "constraint forall i in 0..99999, j in 0..99999 where i == j: a != 11",
    "concept b[i in 0..9999, j in 0..9999] : 0..1",
])
def test_index_binding_budget(tmp_path, monkeypatch, text):
    # The default budget (1,000,000 bindings) takes seconds to exhaust; the path is the same.
    assert ground_module.MAX_BINDINGS == 1_000_000
    monkeypatch.setattr(ground_module, "MAX_BINDINGS", 50_000)
    message = logic_error(tmp_path, "concept a : 0..9\n" + text + "\n", line=2)
    assert message == ("grounding enumerates more than 50000 index bindings (families, forall, sum and where "
                       "together); make the ranges smaller")


def test_scope_and_family_limits(tmp_path, monkeypatch):
    text = "concept x[i in 0..7] : 0..9\nconstraint sum(i in 0..7: x[i]) == 30\n"
    message = logic_error(tmp_path, text, line=2)
    assert "this constraint ranges over 8 variables with 100000000 joint assignments" in message
    assert "split it with hidden variables" in message
    text = "concept x[i in 0..99999, j in 0..1] : 0..1\n"
    assert "family x has more than 100000 members" in logic_error(tmp_path, text, line=1)
    monkeypatch.setattr(ground_module, "MAX_VARIABLES", 10)
    text = "concept x[i in 0..5] : 0..1\nhidden y[i in 0..5] : 0..1\n"
    assert "more than 10 variables" in logic_error(tmp_path, text, line=2)
    monkeypatch.setattr(ground_module, "MAX_TOTAL_ASSIGNMENTS", 50)
    assert "more than 50 joint assignments in all" in logic_error(
        tmp_path, "concept x[i in 0..5] : 0..9\nconstraint forall i in 0..4: x[i] != x[i+1]\n", line=2)


# ----------------------------------------------------------------------------- evaluate_condition
def test_evaluate_condition(tmp_path):
    knowledge = load_knowledge(write(tmp_path, "param N = 2\nconcept a[i in 0..N-1] : 0..9\nconcept c : 0..9\n"))
    values = {"a[0]": np.array([0, 3, 9, 4]), "a[1]": np.array([0, 0, 1, 2]), "c": np.array([1, 1, 1, 1])}

    def evaluate(text):
        return evaluate_condition(parse_expression(text, "task.yaml"), knowledge, values, "task.yaml").tolist()

    assert evaluate("a[0] + a[1] <= N * 3") == [True, True, False, True]
    assert evaluate("sum(i in 0..N-1: a[i]) % 2 == 0 and c == 1") == [True, False, True, True]
    assert evaluate("a[1] != 0 -> a[0] // a[1] == 2") == [True, True, False, True]  # guarded division
    assert evaluate("true") == [True] * 4
    with pytest.raises(LogicError, match=r"^task.yaml:1: division by zero"):
        evaluate("a[0] // a[1] == 1")
    with pytest.raises(LogicError, match=r"^task.yaml:1: the restriction must be a condition"):
        evaluate("a[0] + 1")
    with pytest.raises(LogicError, match=r"^task.yaml:1: a\[2\] does not exist \(a has indices 0..1\)"):
        evaluate("a[2] == 1")
    with pytest.raises(LogicError, match=r"^task.yaml:1: unknown name 'b'"):
        evaluate("b == 1")
    with pytest.raises(LogicError, match=r"mentions c, which the examples do not observe"):
        evaluate_condition(parse_expression("c == 1", "t"), knowledge, {"a[0]": np.array([1])}, "t")
