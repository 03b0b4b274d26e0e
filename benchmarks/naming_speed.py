"""How long the naming search takes on a whole training set, and whether it finds the truth.

For each task, the training examples that 60,000 MNIST images make (60000 / positions
tuples, drawn as the task draws them), clusters planted as a random permutation of the true
digits with a share of random clusters (`--noise`, about a good backbone's error), then
`nesy_gedi.naming.search_naming` with its defaults. Records seconds, the method, whether
the planted naming came back, the labels explained and the runner-up, with load average and
threads. Writes benchmarks/results/naming_speed.json and prints a markdown table.

    python benchmarks/naming_speed.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402
from nesy_gedi.builders import build_circuit  # noqa: E402
from nesy_gedi.config import load_config  # noqa: E402
from nesy_gedi.count_shortcuts import task_support, training_concepts  # noqa: E402
from nesy_gedi.naming import ConceptDomains, search_naming  # noqa: E402

TASKS = ["mnist_max3", "mnist_extremes4", "mnist_count_above6", "mnist_pick3", "mnist_addition_n2",
         "mnist_addition_n4", "mnist_addition_n15"]
IMAGES = 60_000


def run_task(name: str, noise: float, seed: int) -> dict:
    config = load_config(REPO / "tasks" / f"{name}.yaml", [f"train.seed={seed}"])
    circuit = build_circuit(config)
    positions = len(circuit.concepts)
    concepts, labels = training_concepts(config, circuit, IMAGES // positions, task_support(config, circuit))
    domains = ConceptDomains.of(circuit)
    rng = np.random.default_rng(seed)
    relabel = rng.permutation(10)  # the cluster of digit v (every domain here is a set of digits)
    clusters = relabel[concepts]
    flip = rng.random(clusters.shape) < noise
    clusters[flip] = rng.integers(0, 10, size=int(flip.sum()))
    found = search_naming(circuit, clusters, labels, 10, seed=seed)
    truth = np.argsort(relabel)
    right = []
    for g, values in enumerate(found.naming):
        seen = sorted(set(clusters[:, [p for p in range(positions) if domains.group_of[p] == g]].ravel().tolist())
                      & set(relabel[list(domains.values[g])].tolist()))
        right.append(all(values[c] == truth[c] for c in seen))
    return {"task": name, "positions": positions, "examples": int(len(concepts)), "seconds": found.seconds,
            "method": found.method, "restarts": found.restarts, "restarts_agreeing": found.restarts_agreeing,
            "truth_found": all(right), "labels_explained": found.labels_explained,
            "runner_up_labels_explained": found.runner_up_labels_explained}


def markdown(rows: list) -> str:
    lines = ["| task | positions | examples | method | seconds | planted naming found | labels explained "
             "(runner-up) | load |", "|---|---:|---:|---|---:|---|---|---:|"]
    for row in rows:
        lines.append(f"| {row['task']} | {row['positions']} | {row['examples']} | {row['method']} | "
                     f"{row['seconds']:.1f} | {'yes' if row['truth_found'] else 'no'} | "
                     f"{100 * row['labels_explained']:.1f} % ({100 * row['runner_up_labels_explained']:.1f} %) | "
                     f"{row['load_average_1m']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "naming_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.tasks:
        rows.append(run_task(name, args.noise, args.seed))
        rows[-1]["load_average_1m"] = round(os.getloadavg()[0], 2)
        print(f"{name}: {rows[-1]['seconds']:.1f} s, truth found {rows[-1]['truth_found']}", flush=True)
    result = {"benchmark": "naming_speed", "noise": args.noise, "seed": args.seed, "rows": rows,
              **machine_info()}
    result["markdown"] = markdown(rows)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
