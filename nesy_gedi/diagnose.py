"""`nesy-gedi diagnose RUN_DIR`: has a trained run learned the concepts, or a reasoning shortcut?

Label accuracy alone cannot tell: a perception network that learned a reasoning shortcut
(a wrong concept map that keeps every training label) scores as well in distribution as
one that learned the concepts. The diagnosis therefore looks at the concepts themselves
on the test splits: raw accuracy, macro F1, accuracy under the best one-to-one relabelling
of concept values (Hungarian; high matched but low raw accuracy = permuted concepts),
collapse (values never predicted), the entropy of the concept distributions, the
confusion matrix and the learned concept map (for each true value, the value predicted
most often). The learned map is checked against the task's knowledge: is it one of the
maps that keep every label of the training support (shortcuts.py), other than the
identity? Writes diagnosis.json, report.md and confusion-matrix PNGs into the run dir.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from .circuit import KnowledgeCircuit
from .config.schema import TaskConfig
from .count_shortcuts import list_values, near_shortcut_examples, task_support
from .errors import NesyError
from .evaluate import load_run, predict_split
from .metrics import cluster_accuracy, confusion_matrix, macro_f1, nmi
from .objectives.entropy import normalised_entropy
from .runs import CONFIG, load_run_config, write_json
from .naming import map_label_share, near_shortcuts
from .plots import save_confusion_heatmap
from .tracking import Tracker
from .shortcuts import concept_label_classes, count_shortcuts, preserves_labels

DIAGNOSIS = "diagnosis.json"
REPORT = "report.md"
MAX_REPORTED_MAPS = 40
# Larger concept spaces are not checked for shortcuts by `diagnose` (counting 10**4 concept
# tuples takes seconds, 10**5 minutes); `count-shortcuts` itself goes up to 10**6.
DIAGNOSE_MAX_CONCEPT_SPACE = 20_000
__all__ = ["diagnose_run", "diagnose_predictions", "learned_concept_map", "name_shortcut", "DIAGNOSIS", "REPORT"]


# ----------------------------------------------------------------------------- a learned shortcut
def name_shortcut(domain: list, learned_map: list, count: dict) -> dict:
    """A learned shortcut by name ("0->5 1->6 ...", the values it moves) and the labels that
    would have excluded it: one labelled image of ANY value it moves excludes this map; the
    task's suggested set (count["suggested_labels"]) excludes every shortcut, so the map
    moves at least one of its values (`suggested_labels_moved`)."""
    moved = [v for v, m in zip(domain, learned_map) if m != v]
    named = {"map": " ".join(f"{v}->{m}" for v, m in zip(domain, learned_map) if m != v),
             "moved_values": moved}
    for key in ("suggested_labels", "permutation_suggested_labels"):
        if key == "permutation_suggested_labels" and sorted(learned_map) != sorted(domain):
            continue
        if key in count:
            values = count[key]["values"]
            named[key] = values
            named[f"{key}_moved"] = [v for v in values if v in moved]
    return named


def _near_shortcut_diagnosis(circuit: KnowledgeCircuit, train_set, domain: list, learned_map: list,
                             count: dict) -> dict:
    """The share of training labels the learned map keeps, and the exact or near-shortcut
    closest to it (fewest values read differently), with the labels that exclude it."""
    rows = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))
    rows = rows[:near_shortcut_examples(circuit)]
    concepts, labels = train_set.concepts[rows].numpy(), train_set.labels[rows].numpy()
    share = map_label_share(circuit, concepts, labels, learned_map)
    found = near_shortcuts(circuit, concepts, labels, top=20)["near_shortcuts"]
    # The learned map reads the first concept's domain; so do the candidates it is compared with.
    candidates = [{**entry, "exact": entry["label_share"] == 1.0} for entry in found
                  if entry["domain"] == circuit.concepts[0].name]
    for mapping in count.get("maps") or []:
        if isinstance(mapping, list) and mapping != domain and all(isinstance(v, int) for v in mapping):
            candidates.append({"map": " ".join(f"{v}->{m}" for v, m in zip(domain, mapping) if m != v),
                               "mapping": mapping, "kind": "shortcut", "label_share": 1.0, "exact": True,
                               "excluded_by": [v for v, m in zip(domain, mapping) if m != v]})
    nearest = None
    if candidates and learned_map != domain:
        def distance(entry):
            return sum(a != b for a, b in zip(entry["mapping"], learned_map))
        nearest = min(candidates, key=lambda entry: (distance(entry), -entry["label_share"]))
        nearest = {**{k: nearest[k] for k in ("map", "kind", "label_share", "exact", "excluded_by")},
                   "values_differing_from_the_learned_map": distance(nearest)}
    return {"map_label_share": share, "map_excluded_by": [v for v, m in zip(domain, learned_map) if m != v],
            "nearest_shortcut": nearest, "near_shortcuts": found[:5]}


# ----------------------------------------------------------------------------- metrics of one split
def _positions(values: torch.Tensor, domain: tuple) -> np.ndarray:
    lookup = {value: i for i, value in enumerate(domain)}
    flat = np.asarray(values).reshape(-1)
    return np.array([lookup[int(v)] for v in flat], dtype=np.int64).reshape(np.asarray(values).shape)


def learned_concept_map(true_positions: np.ndarray, predicted_positions: np.ndarray, domain: tuple) -> list:
    """For each true value: the value predicted most often, its share and the number of examples."""
    rows = []
    for i, value in enumerate(domain):
        predicted = predicted_positions[true_positions == i]
        if len(predicted) == 0:
            rows.append({"true": value, "predicted": None, "share": None, "examples": 0})
            continue
        counts = np.bincount(predicted, minlength=len(domain))
        best = int(counts.argmax())
        rows.append({"true": value, "predicted": domain[best], "share": float(counts[best] / len(predicted)),
                     "examples": int(len(predicted))})
    return rows


def diagnose_predictions(predictions: dict, circuit: KnowledgeCircuit, support: np.ndarray | None = None,
                         classes: np.ndarray | None = None, check_map: bool = True) -> dict:
    """Label and concept metrics of one split's predictions (the dict of evaluate.predict_split).

    Concept metrics pool all concept positions (one perception network reads every image).
    `support`: the task's training support (value tuples; None = every consistent tuple),
    against which the learned concept map is checked (`check_map`; otherwise the checks are None).
    """
    domain = tuple(circuit.concepts[0].domain)
    size = len(domain)
    true = _positions(predictions["concepts"], domain)
    predicted = _positions(predictions["predicted_concepts"], domain)
    flat_true, flat_predicted = true.reshape(-1), predicted.reshape(-1)
    label_correct = (torch.as_tensor(predictions["predicted_labels"]) == torch.as_tensor(predictions["labels"]))
    matched, matching = cluster_accuracy(flat_true, flat_predicted, size)
    probs = torch.as_tensor(predictions["concept_probs"]).float()
    concept_map = learned_concept_map(flat_true, flat_predicted, domain)
    # Values absent from the split cannot be judged: they keep their identity in the checked map.
    as_map = {row["true"]: row["predicted"] for row in concept_map if row["predicted"] is not None}
    identity = all(true_value == predicted_value for true_value, predicted_value in as_map.items())
    keeps_labels = None
    if check_map:
        if classes is None:
            classes, _ = concept_label_classes(circuit)
        keeps_labels = preserves_labels(circuit, as_map, support, classes=classes)
    return {
        "examples": int(true.shape[0]),
        "label_accuracy": float(label_correct.all(dim=1).float().mean()) if len(label_correct) else None,
        "concept_accuracy": float((flat_true == flat_predicted).mean()),
        "concept_accuracy_per_position": [float((true[:, p] == predicted[:, p]).mean())
                                          for p in range(true.shape[1])],
        "concept_macro_f1": macro_f1(flat_true, flat_predicted, size),
        "matched_concept_accuracy": matched,
        "concept_nmi": nmi(flat_true, flat_predicted),
        "matched_concept_mapping": {str(domain[c]): domain[t] for c, t in sorted(matching.items()) if c < size},
        "concept_collapse": float(1.0 - len(np.unique(flat_predicted)) / size),
        "predicted_concept_values": [domain[i] for i in np.unique(flat_predicted).tolist()],
        "mean_normalised_concept_entropy": float(normalised_entropy(probs).mean()) if probs.numel() else None,
        "confusion_matrix": confusion_matrix(flat_true, flat_predicted, size, normalise_rows=True).tolist(),
        "concept_map": concept_map,
        "concept_map_is_identity": identity,
        "concept_map_preserves_labels": keeps_labels,
        "concept_map_is_shortcut": None if keeps_labels is None else keeps_labels and not identity,
        # A label-preserving permutation: clusters right, names wrong (what GEDI's prior can't exclude).
        "concept_map_is_permutation": sorted(as_map.values()) == sorted(as_map),
    }


# ----------------------------------------------------------------------------- the report
def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _report(diagnosis: dict, values: list) -> str:
    splits = diagnosis["splits"]
    names = list(splits)
    lines = [f"# Diagnosis of `{diagnosis['run']}`", "",
             f"Task `{diagnosis['task']}`, mode `{diagnosis['mode']}`, seed {diagnosis['seed']}.", ""]
    count = diagnosis["shortcut_count"]
    if count.get("error"):
        lines += [f"Reasoning shortcuts of the task: not counted ({count['error']}).", ""]
    else:
        lines += [f"The task's training support allows **{count['concept_maps']}** concept maps that keep every "
                  f"training label (shared map), i.e. **{count['shortcuts']}** reasoning shortcut(s); "
                  f"{count['permutation_shortcuts']} of them permute the concept values (a balanced "
                  f"clustering cannot rule those out).", ""]
        for key, what in (("suggested_labels", "shortcut"), ("permutation_suggested_labels", "permutation shortcut")):
            suggestion = count.get(key)
            if suggestion and suggestion["values"]:
                left = ", ".join(f"{k}: {n}" for k, n in enumerate(suggestion["shortcuts_left_by_budget"]))
                lines += [f"One labelled image of each of the values **{list_values(suggestion['values'])}** excludes "
                          f"every {what} (the smallest such set{'' if suggestion['exact'] else ', greedy'}; "
                          f"{what}s left with k labelled values: {left}).", ""]
    verdict = ("**a reasoning shortcut**" if diagnosis["concept_map_is_shortcut"] else
               "the identity (the true concepts)" if diagnosis["concept_map_is_identity"] else
               "not checked against the knowledge" if diagnosis["concept_map_preserves_labels"] is None else
               "not a label-preserving map (neither the concepts nor a shortcut)")
    lines += [f"The learned concept map (most frequent prediction per true value, ID test) is {verdict}.", ""]
    named = diagnosis.get("learned_shortcut")
    if named:
        lines += [f"The learned shortcut is `{named['map']}` (values not listed map to themselves). One labelled "
                  f"image of any value it moves ({list_values(named['moved_values'])}) would have excluded this map."]
        if "suggested_labels" in named:
            lines.append(f"The task's suggested labels {list_values(named['suggested_labels'])} exclude every "
                         f"shortcut; this map moves {list_values(named['suggested_labels_moved'])} of them.")
        if "permutation_suggested_labels" in named:
            lines.append(f"It permutes the values: the labels {list_values(named['permutation_suggested_labels'])} "
                         f"exclude every permutation shortcut; this map moves "
                         f"{list_values(named['permutation_suggested_labels_moved'])} of them.")
        lines.append("")
    if diagnosis.get("map_excluded_by"):
        lines.append(f"That map keeps {100 * diagnosis['map_label_share']:.1f} % of the training labels: what the "
                     "semantic loss sees of it. One labelled image of any of "
                     f"{list_values(diagnosis['map_excluded_by'])} would have excluded it.")
        nearest = diagnosis.get("nearest_shortcut")
        if nearest:
            lines.append(f"The nearest {'exact' if nearest['exact'] else 'near-'}shortcut is `{nearest['map']}` "
                         f"({nearest['kind']}, keeps {100 * nearest['label_share']:.1f} % of the labels, "
                         f"{nearest['values_differing_from_the_learned_map']} value(s) from the learned map); "
                         f"a label of any of {list_values(nearest['excluded_by'])} excludes it.")
        lines.append("")

    metrics = ["examples", "label_accuracy", "concept_accuracy", "concept_macro_f1", "matched_concept_accuracy",
               "concept_nmi", "concept_collapse", "mean_normalised_concept_entropy"]
    lines += ["## Metrics", "", "| metric | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_number(splits[n].get(metric)) for n in names) + " |")
    lines.append("")

    lines += ["## Learned concept map (ID test)", "", "| true | predicted | share | examples |", "|---:|---:|---:|---:|"]
    for row in diagnosis["concept_map"]:
        mark = "" if row["predicted"] == row["true"] else " ⚠"
        lines.append(f"| {row['true']} | {_number(row['predicted'])}{mark} | {_number(row['share'])} | "
                     f"{row['examples']} |")
    lines.append("")

    matrix = diagnosis["confusion_matrix"]
    lines += ["## Confusion matrix (ID test, rows = true concept, row-normalised, %)", "",
              "| true \\ pred | " + " | ".join(map(str, values)) + " |", "|---|" + "---:|" * len(values)]
    for value, row in zip(values, matrix):
        lines.append(f"| **{value}** | " + " | ".join(f"{100 * x:.0f}" if x else "·" for x in row) + " |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    if "test_ood" in splits:
        lines += ["![confusion matrix, OOD test](confusion_matrix_ood.png)", ""]

    maps = count.get("maps")
    if maps:
        lines += ["## The task's label-preserving concept maps", "",
                  "| map | " + " | ".join(map(str, values)) + " |", "|---|" + "---:|" * len(values)]
        for index, concept_map in enumerate(maps[:MAX_REPORTED_MAPS]):
            name = "identity" if list(concept_map) == list(values) else f"shortcut {index}"
            lines.append(f"| {name} | " + " | ".join(map(str, concept_map)) + " |")
        if len(maps) > MAX_REPORTED_MAPS:
            lines.append(f"| … {len(maps) - MAX_REPORTED_MAPS} more | " + " | ".join("" for _ in values) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command
def _check_run_dir(run_dir: Path) -> TaskConfig:
    if not run_dir.is_dir():
        raise NesyError("run directory not found", str(run_dir))
    if not (run_dir / CONFIG).exists():
        raise NesyError(f"not a run directory (no {CONFIG}); diagnose needs the directory of a `train` run",
                        str(run_dir))
    config = load_run_config(run_dir)
    if config.logic is None:
        raise NesyError("this is not a `train` run (its task has no logic section, e.g. a `pretrain` run); "
                        "diagnose needs a run trained with the semantic loss", str(run_dir))
    return config


def diagnose_run(run_dir, data_root=None, device=None, quiet: bool = False) -> dict:
    """Diagnose a `train` run's checkpoint on its test splits; writes diagnosis.json, report.md, PNGs."""
    run_dir = Path(run_dir)
    stored = _check_run_dir(run_dir)
    if stored.train.num_threads:
        torch.set_num_threads(stored.train.num_threads)
    config, circuit, splits, perception, device = load_run(run_dir, data_root, device)
    support = task_support(config, circuit)
    values = list(circuit.concepts[0].domain)
    try:
        classes, _ = concept_label_classes(circuit, DIAGNOSE_MAX_CONCEPT_SPACE)
        count = count_shortcuts(circuit, support, per_position=False, classes=classes)
    except NesyError as error:
        classes, count = None, {"concept_maps": None, "shortcuts": None, "permutation_shortcuts": None,
                                "error": str(error)}

    results = {}
    for name in ("test", "test_ood"):
        if name in splits and len(splits[name]):
            predictions = predict_split(perception, circuit, splits[name], config.train.eval_batch_size, device)
            results[name] = diagnose_predictions(predictions, circuit, support, classes, check_map=classes is not None)
    if "test" not in results:
        raise NesyError("the run's task has no test examples to diagnose", str(run_dir))

    test = results["test"]
    diagnosis = {
        "run": str(run_dir),
        "task": config.name,
        "mode": config.train.mode,
        "seed": config.train.seed,
        "label_accuracy": test["label_accuracy"],
    }
    if "test_ood" in results:
        diagnosis["label_accuracy_ood"] = results["test_ood"]["label_accuracy"]
        diagnosis["concept_accuracy_ood"] = results["test_ood"]["concept_accuracy"]
    for key in ("concept_accuracy", "concept_macro_f1", "matched_concept_accuracy", "concept_nmi", "concept_collapse",
                "mean_normalised_concept_entropy", "confusion_matrix", "concept_map", "concept_map_is_identity",
                "concept_map_preserves_labels", "concept_map_is_shortcut", "concept_map_is_permutation"):
        diagnosis[key] = test[key]
    diagnosis["learned_concept_map"] = [row["predicted"] if row["predicted"] is not None else row["true"]
                                        for row in test["concept_map"]]
    diagnosis["learned_shortcut"] = (name_shortcut(values, diagnosis["learned_concept_map"], count)
                                     if diagnosis["concept_map_is_shortcut"] else None)
    if "train" in splits and len(splits["train"]):
        diagnosis.update(_near_shortcut_diagnosis(circuit, splits["train"], values,
                                                  diagnosis["learned_concept_map"], count))
    diagnosis["suggested_labels"] = count.get("suggested_labels")
    diagnosis["shortcuts"] = count["shortcuts"]
    diagnosis["concept_maps"] = count["concept_maps"]
    diagnosis["permutation_shortcuts"] = count["permutation_shortcuts"]
    diagnosis["shortcut_count"] = count
    diagnosis["splits"] = results
    diagnosis["figures"] = []
    tracker = Tracker(run_dir, config.train.tensorboard, config.source)
    for name, suffix in (("test", ""), ("test_ood", "_ood")):
        if name in results:
            path = run_dir / f"confusion_matrix{suffix}.png"
            save_confusion_heatmap(results[name]["confusion_matrix"], values, path,
                                   f"{config.name} ({config.train.mode}): concepts, {name}",
                                   partial(tracker.image, f"diagnose/{path.stem}") if tracker.writer is not None
                                   else None)
            diagnosis["figures"].append(path.name)
    tracker.close()

    write_json(run_dir / DIAGNOSIS, diagnosis)
    (run_dir / REPORT).write_text(_report(diagnosis, values), encoding="utf-8")
    if not quiet:
        _print_summary(diagnosis, run_dir)
    return diagnosis


def _print_summary(diagnosis: dict, run_dir: Path) -> None:
    ood = diagnosis.get("label_accuracy_ood")
    print(f"{diagnosis['task']} ({diagnosis['mode']}, seed {diagnosis['seed']})")
    print(f"  label accuracy           {_number(diagnosis['label_accuracy'])} ID"
          + (f", {_number(ood)} OOD" if ood is not None else ""))
    print(f"  concept accuracy         {_number(diagnosis['concept_accuracy'])}"
          f"  (matched {_number(diagnosis['matched_concept_accuracy'])}, macro F1 "
          f"{_number(diagnosis['concept_macro_f1'])})")
    print(f"  concept collapse         {_number(diagnosis['concept_collapse'])}"
          f"  (mean normalised entropy {_number(diagnosis['mean_normalised_concept_entropy'])})")
    print(f"  learned concept map      {' '.join(map(str, diagnosis['learned_concept_map']))}")
    shortcut = ("a reasoning shortcut" if diagnosis["concept_map_is_shortcut"] else
                "the identity" if diagnosis["concept_map_is_identity"] else
                "not checked" if diagnosis["concept_map_preserves_labels"] is None else "not label-preserving")
    print(f"  that map is              {shortcut}; the task has {_number(diagnosis['shortcuts'])} shortcut(s)")
    if diagnosis.get("map_excluded_by"):
        print(f"  it keeps                 {100 * diagnosis['map_label_share']:.1f} % of the training labels; "
              f"a label of any of {list_values(diagnosis['map_excluded_by'])} excludes it")
        nearest = diagnosis.get("nearest_shortcut")
        if nearest:
            print(f"  nearest shortcut         {nearest['map']} ({'exact' if nearest['exact'] else 'near'}, keeps "
                  f"{100 * nearest['label_share']:.1f} % of the labels, {nearest['values_differing_from_the_learned_map']}"
                  f" value(s) from the learned map; excluded by a label of {list_values(nearest['excluded_by'])})")
    named = diagnosis.get("learned_shortcut")
    if named:
        print(f"  learned shortcut         {named['map']}  (a label of any moved value excludes it)")
        if "suggested_labels" in named:
            print(f"  suggested labels         {list_values(named['suggested_labels'])} exclude every shortcut; "
                  f"this map moves {list_values(named['suggested_labels_moved'])}")
    elif diagnosis.get("suggested_labels") and diagnosis["suggested_labels"]["values"]:
        print(f"  suggested labels         {list_values(diagnosis['suggested_labels']['values'])} "
              f"exclude every shortcut of the task")
    print(f"  report: {run_dir / REPORT}")
