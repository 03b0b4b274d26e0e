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

from pathlib import Path

import numpy as np
import torch

from .circuit import KnowledgeCircuit
from .errors import NesyError
from .metrics import cluster_accuracy, confusion_matrix, macro_f1
from .objectives.entropy import normalised_entropy
from .shortcuts import concept_label_classes, count_shortcuts, is_identity, preserves_labels

DIAGNOSIS = "diagnosis.json"
REPORT = "report.md"
MAX_REPORTED_MAPS = 40
# Larger concept spaces are not checked for shortcuts by `diagnose` (counting 10**4 concept
# tuples takes seconds, 10**5 minutes); `count-shortcuts` itself goes up to 10**6.
DIAGNOSE_MAX_CONCEPT_SPACE = 20_000

__all__ = ["diagnose_run", "diagnose_predictions", "learned_concept_map", "save_confusion_heatmap",
           "DIAGNOSIS", "REPORT"]


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
    identity = is_identity(circuit, as_map)
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


# ----------------------------------------------------------------------------- figures and report
def save_confusion_heatmap(matrix, values: list, path: Path, title: str) -> Path:
    """A row-normalised confusion matrix as a heatmap, true values down, predictions across."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=float)
    size = len(values)
    figure = Figure(figsize=(1.2 + 0.5 * size, 1.0 + 0.5 * size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(size), [str(v) for v in values])
    axes.set_yticks(range(size), [str(v) for v in values])
    axes.set_xlabel("predicted concept")
    axes.set_ylabel("true concept")
    axes.set_title(title, fontsize=10)
    if size <= 20:
        for row in range(size):
            for col in range(size):
                if matrix[row, col] >= 0.005:
                    axes.text(col, row, f"{matrix[row, col]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if matrix[row, col] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the row")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


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
    verdict = ("**a reasoning shortcut**" if diagnosis["concept_map_is_shortcut"] else
               "the identity (the true concepts)" if diagnosis["concept_map_is_identity"] else
               "not checked against the knowledge" if diagnosis["concept_map_preserves_labels"] is None else
               "not a label-preserving map (neither the concepts nor a shortcut)")
    lines += [f"The learned concept map (most frequent prediction per true value, ID test) is {verdict}.", ""]

    metrics = ["examples", "label_accuracy", "concept_accuracy", "concept_macro_f1", "matched_concept_accuracy",
               "concept_collapse", "mean_normalised_concept_entropy"]
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
def _check_run_dir(run_dir: Path):
    import yaml

    from .config import config_from_dict
    from .runs import CONFIG

    if not run_dir.is_dir():
        raise NesyError("run directory not found", str(run_dir))
    config_path = run_dir / CONFIG
    if not config_path.exists():
        raise NesyError(f"not a run directory (no {CONFIG}); diagnose needs the directory of a `train` run",
                        str(run_dir))
    try:
        config = config_from_dict(yaml.safe_load(config_path.read_text()) or {}, str(config_path))
    except yaml.YAMLError:
        raise NesyError("the run's config is not valid YAML", str(config_path)) from None
    if config.logic is None:
        raise NesyError("this is not a `train` run (its task has no logic section, e.g. a `pretrain` run); "
                        "diagnose needs a run trained with the semantic loss", str(run_dir))
    return config


def diagnose_run(run_dir, data_root=None, device=None, quiet: bool = False) -> dict:
    """Diagnose a `train` run's checkpoint on its test splits; writes diagnosis.json, report.md, PNGs."""
    from .evaluate import load_run, predict_split
    from .runs import write_json
    from .shortcuts import task_support

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
    for key in ("concept_accuracy", "concept_macro_f1", "matched_concept_accuracy", "concept_collapse",
                "mean_normalised_concept_entropy", "confusion_matrix", "concept_map", "concept_map_is_identity",
                "concept_map_preserves_labels", "concept_map_is_shortcut", "concept_map_is_permutation"):
        diagnosis[key] = test[key]
    diagnosis["learned_concept_map"] = [row["predicted"] if row["predicted"] is not None else row["true"]
                                        for row in test["concept_map"]]
    diagnosis["shortcuts"] = count["shortcuts"]
    diagnosis["concept_maps"] = count["concept_maps"]
    diagnosis["permutation_shortcuts"] = count["permutation_shortcuts"]
    diagnosis["shortcut_count"] = count
    diagnosis["splits"] = results
    diagnosis["figures"] = []
    for name, suffix in (("test", ""), ("test_ood", "_ood")):
        if name in results:
            path = save_confusion_heatmap(results[name]["confusion_matrix"], values,
                                          run_dir / f"confusion_matrix{suffix}.png",
                                          f"{config.name} ({config.train.mode}): concepts, {name}")
            diagnosis["figures"].append(path.name)

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
    print(f"  report: {run_dir / REPORT}")
