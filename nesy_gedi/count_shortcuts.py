"""`nesy-gedi count-shortcuts TASK`: the reasoning shortcuts of a task's knowledge and
training support, counted exactly (nesy_gedi.shortcuts), the labels that exclude them, and
the near-shortcuts (wrong maps that keep most training labels, nesy_gedi.naming)."""
from __future__ import annotations

import numpy as np
import torch

from .builders import build_circuit
from .circuit import KnowledgeCircuit
from .config.load import load_config
from .config.schema import TaskConfig
from .data.tasks import allowed_support
from .errors import NesyError
from .naming import near_shortcuts, value_positions
from .shortcuts import MAX_LISTED_MAPS, count_shortcuts

__all__ = ["count_shortcuts_for_task", "format_shortcut_count", "task_support", "training_concepts"]

# Training tuples drawn to score near-shortcuts (fewer for long tuples: each says more).
NEAR_SHORTCUT_EXAMPLES = 5000
NEAR_SHORTCUT_POSITIONS = 20_000


def near_shortcut_examples(circuit: KnowledgeCircuit) -> int:
    """How many training tuples score the near-shortcuts of `circuit`'s task."""
    return min(NEAR_SHORTCUT_EXAMPLES, max(200, NEAR_SHORTCUT_POSITIONS // len(circuit.concepts)))


# ----------------------------------------------------------------------------- a task's shortcuts
def task_support(config: TaskConfig, circuit: KnowledgeCircuit) -> np.ndarray | None:
    """The task's training support as value tuples, or None for every consistent concept tuple."""
    if config.data.train_support is None:
        return None
    return allowed_support(config.data.train_support, circuit, config.source)


def training_concepts(config: TaskConfig, circuit: KnowledgeCircuit, count: int | None = None,
                      support: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concept tuples drawn as the task's training examples are (each position's value uniform
    over its domain, or a tuple of `data.train_support`; tuples the knowledge rules out are
    dropped, as the task's data drops them) and their labels, without reading any image."""
    if count is None:
        count = near_shortcut_examples(circuit)
    generator = torch.Generator().manual_seed(config.train.seed)
    if support is not None:
        concepts = torch.as_tensor(support)[torch.randint(len(support), (count,), generator=generator)]
    else:
        concepts = torch.stack([torch.tensor(v.domain)[torch.randint(len(v.domain), (count,), generator=generator)]
                                for v in circuit.concepts], dim=1)
    labels, consistent = circuit.deduce_labels(torch.as_tensor(value_positions(circuit, concepts)[1]))
    return concepts[consistent].numpy(), labels[consistent].numpy()


def count_shortcuts_for_task(task_path, overrides: list | None = None, per_position: bool = False,
                             suggest: bool = True, list_limit: int = MAX_LISTED_MAPS, near: bool = True) -> dict:
    """`nesy-gedi count-shortcuts TASK`: count_shortcuts for a task file's logic and training
    support, with the task's name, logic file, parameters and support in front, and its
    near-shortcuts (`near`): the wrong maps that keep most training labels. A concept space
    too large to count exactly still gets its near-shortcuts (`exact_count_error` says why)."""
    config = load_config(task_path, overrides)
    if config.logic is None:
        raise NesyError("this task has no logic section: reasoning shortcuts are counted for tasks "
                        "trained with a logic file", config.source)
    circuit = build_circuit(config)
    result = {"task": config.name, "logic": config.logic.file, "params": dict(config.logic.params),
              "support": "data.train_support" if config.data.train_support is not None
              else "every concept tuple consistent with the knowledge"}
    support = task_support(config, circuit)
    try:
        result.update(count_shortcuts(circuit, support, per_position, list_limit=list_limit, suggest=suggest))
    except NesyError as error:
        if not near:
            raise
        result.update({"concept_maps": None, "shortcuts": None, "permutation_shortcuts": None,
                       "exact_count_error": error.message if hasattr(error, "message") else str(error)})
    if near:
        concepts, labels = training_concepts(config, circuit, support=support)
        result["near_shortcut_analysis"] = near_shortcuts(circuit, concepts, labels)
        result["near_shortcuts"] = result["near_shortcut_analysis"].pop("near_shortcuts")
    return result


def list_values(values: list) -> str:
    """Concept values as the reports print them: "0 3 5", or "none"."""
    return " ".join(map(str, values)) if values else "none"


def _suggestion_lines(suggestion: dict, what: str) -> list:
    values = suggestion["values"]
    left = suggestion["shortcuts_left_by_budget"]
    if left[0] == 0:
        return [f"labels needed to exclude the {what}s: none (there are none)"]
    proof = "" if suggestion["exact"] else " (greedy: the exact search was cut short, smaller sets may exist)"
    lines = [f"labels that exclude every {what}: one labelled image of each of {list_values(values)} "
             f"({len(values)} value{'s' if len(values) != 1 else ''}){proof}"]
    budgets = ", ".join(f"{k}: {n}" + (f" ({list_values(best)})" if k else "")
                        for k, (n, best) in enumerate(zip(left, suggestion["sets_by_budget"])))
    lines.append(f"  {what}s left with k labelled values (best values): {budgets}")
    return lines


def _near_shortcut_lines(result: dict, shown: int = 5) -> list:
    if not result.get("near_shortcuts"):
        return []
    analysis = result.get("near_shortcut_analysis", {})
    lines = [f"near-shortcuts (wrong maps keeping the most training labels, over {analysis.get('examples')} "
             f"drawn training tuples):"]
    several = len({entry["domain"] for entry in result["near_shortcuts"]}) > 1 or "exact_count_error" in result
    for entry in result["near_shortcuts"][:shown]:
        where = f"{entry['domain']}: " if several else ""
        exact = " (a shortcut of these tuples)" if entry["label_share"] == 1.0 else ""
        lines.append(f"  {where + entry['map']:<24} {entry['kind']:<6} keeps {100 * entry['label_share']:5.1f} % of "
                     f"the labels{exact}; a label of {' or '.join(map(str, entry['excluded_by']))} excludes it")
    return lines


def format_shortcut_count(result: dict, permutations_only: bool = False) -> str:
    """The text `count-shortcuts` prints for a count_shortcuts(_for_task) result; with
    `permutations_only`, only the permutation shortcuts and the labels that exclude them."""
    lines = []
    if result.get("concept_maps") is None and "exact_count_error" in result:
        return "\n".join([f"exact count skipped: {result['exact_count_error']}"] + _near_shortcut_lines(result))
    if not permutations_only:
        lines += [f"concept maps that keep every training label: {result['concept_maps']}",
                  f"reasoning shortcuts (maps other than the identity): {result['shortcuts']}"]
    lines.append(f"shortcuts that permute the concept values: {result['permutation_shortcuts']} "
                 f"(balanced clusters cannot rule these out; concept supervision can)")
    if not permutations_only and "suggested_labels" in result:
        lines += _suggestion_lines(result["suggested_labels"], "shortcut")
    if "permutation_suggested_labels" in result:
        lines += _suggestion_lines(result["permutation_suggested_labels"], "permutation shortcut")
    if result.get("per_position") and ("suggested_labels" in result or "permutation_suggested_labels" in result):
        lines.append("  (per-position maps: a labelled image of value v pins v at every position)")
    if not permutations_only:
        lines += _near_shortcut_lines(result)
    return "\n".join(lines)


