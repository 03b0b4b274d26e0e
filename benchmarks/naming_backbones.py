"""The naming search on real clusters: each task's training images through each seed's
label-free backbone (`--pretrain`, the no-gen task by default, from the store `--store`,
trained there if missing), then `nesy_gedi.naming.search_naming` as `nesy-gedi train` calls it (K = 0). Records
the naming's labels explained, its concept accuracy on the training images (one-domain tasks)
and the seconds. `--compare FILE` runs another version of the search module on the same
clusters right after, and says whether both found the same naming.

    python benchmarks/naming_backbones.py --compare /tmp/search_before.py \
        --out benchmarks/results/sweeps/naming_backbones_compared.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, render_table  # noqa: E402
from naming_speed import TASKS, load_average, load_module  # noqa: E402
from nesy_gedi.builders import build_circuit, build_perception  # noqa: E402
from nesy_gedi.config import load_config  # noqa: E402
from nesy_gedi.data.files import resolve_data_root  # noqa: E402
from nesy_gedi.data.tasks import build_task_data  # noqa: E402
from nesy_gedi.naming import search_naming  # noqa: E402
from nesy_gedi.pretrain import pretrained_backbone  # noqa: E402


def backbone_clusters(config, data_root: str | None):
    """(circuit, cluster of every training image [E, P], concepts [E, P], labels, clusters K)."""
    circuit = build_circuit(config)
    train_set = build_task_data(config, circuit, resolve_data_root(data_root))["train"]
    perception = build_perception(config, circuit, tuple(train_set.images.shape[1:]), initialise=True).eval()
    with torch.no_grad():
        clusters = torch.cat([perception.clusters(train_set.batch(torch.arange(s, min(s + 1000, len(train_set))))[0])
                              .argmax(-1) for s in range(0, len(train_set), 1000)]).numpy()
    return (circuit, clusters, train_set.concepts.numpy(), train_set.labels.numpy(),
            perception.cluster_map.logits.shape[-1])


def timed(search, circuit, clusters, concepts, labels, num_clusters: int, seed: int) -> dict:
    load_before = load_average()
    found = search(circuit, clusters, labels, num_clusters, seed=seed)
    named = np.array(found.naming[0])[clusters] if len(found.naming) == 1 else None
    return {"naming": found.naming, "seconds": found.seconds, "labels_explained": found.labels_explained,
            "concept_accuracy": None if named is None else float((named == concepts).mean()),
            "restarts": found.restarts, "restarts_agreeing": found.restarts_agreeing,
            "load_average_1m": [load_before, load_average()]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, one backbone each")
    parser.add_argument("--pretrain", default=str(REPO / "tasks" / "gedi_mnist_nogen.yaml"),
                        help="the pretraining task of the backbones")
    parser.add_argument("--store", default=str(REPO / "runs" / "pretrained"), help="the pretraining store")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", metavar="FILE", help="another search module to run on the same clusters")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sweeps" / "naming_backbones.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    compared = load_module(args.compare) if args.compare else None
    rows = []
    for task in args.tasks:
        for seed in range(args.seeds):
            config = load_config(REPO / "tasks" / f"{task}.yaml",
                                 [f"train.seed={seed}", f"model.pretrain={args.pretrain}",
                                  f"model.pretrain_dir={args.store}", "map.epochs=1"])
            backbone = pretrained_backbone(config, Path(args.store) / "unused", args.data_root, "cpu")
            config = load_config(REPO / "tasks" / f"{task}.yaml", [f"train.seed={seed}", f"model.init={backbone}",
                                                                   "model.pretrain=null", "map.epochs=1"])
            circuit, clusters, concepts, labels, k = backbone_clusters(config, args.data_root)
            row = {"task": task, "seed": seed, "backbone": str(backbone),
                   **timed(search_naming, circuit, clusters, concepts, labels, k, seed)}
            if compared is not None:
                row["compared"] = timed(compared.search_naming, circuit, clusters, concepts, labels, k, seed)
                row["same_naming"] = row["compared"]["naming"] == row["naming"]
            rows.append(row)
            print(f"{task} seed {seed}: {row['seconds']:.1f} s, explained {row['labels_explained']:.4f}"
                  + (f", compared {row['compared']['seconds']:.1f} s, same naming {row['same_naming']}"
                     if compared else ""), flush=True)
    header = ["task", "seed", "labels explained", "concept acc", "s"] + (
        ["compared: explained", "s", "same naming"] if compared else [])
    table = []
    for row in rows:
        acc = "–" if row["concept_accuracy"] is None else f"{100 * row['concept_accuracy']:.1f}"
        line = [row["task"], str(row["seed"]), f"{100 * row['labels_explained']:.2f}", acc, f"{row['seconds']:.1f}"]
        if compared:
            other = row["compared"]
            line += [f"{100 * other['labels_explained']:.2f}", f"{other['seconds']:.1f}",
                     "yes" if row["same_naming"] else "no"]
        table.append(line)
    result = {"benchmark": "naming_backbones", "compared": args.compare, "rows": rows, **machine_info(),
              "table": render_table(header, table)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
