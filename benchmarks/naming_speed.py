"""How long the naming search takes on a whole training set, and whether it finds the truth.

For each task, the training examples that 60,000 MNIST images make (60000 / positions
tuples, drawn as the task draws them), clusters planted as a random permutation of the true
digits with a share of random clusters (`--noise`, about a good backbone's error), then
`nesy_gedi.naming.search_naming` with its defaults. Records seconds (wall and CPU), the
method, whether the planted naming came back, the labels explained and the runner-up, with
the load average before and after each task and the threads. Writes
benchmarks/results/naming_speed.json and prints a markdown table.

`--compare FILE` also runs the `search_naming` of another version of the search module on
the same examples, right after the current one, so that both see the same load (the machine
is shared): e.g. `git show REV:nesy_gedi/naming/search.py > /tmp/search_before.py`.

    python benchmarks/naming_speed.py
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
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


def load_module(path: str):
    """Another version of nesy_gedi/naming/search.py, loaded inside that package so that its
    relative imports resolve."""
    spec = importlib.util.spec_from_file_location("nesy_gedi.naming._search_compared", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def timed_search(search, circuit, clusters, labels, seed: int, truth, domains, relabel) -> dict:
    load_before, cpu = load_average(), time.process_time()
    found = search(circuit, clusters, labels, 10, seed=seed)
    cpu = time.process_time() - cpu
    right = []
    for g, values in enumerate(found.naming):
        seen = sorted(set(clusters[:, domains.positions(g)].ravel().tolist())
                      & set(relabel[list(domains.values[g])].tolist()))
        right.append(all(values[c] == truth[c] for c in seen))
    return {"seconds": found.seconds, "cpu_seconds": cpu, "method": found.method, "restarts": found.restarts,
            "restarts_agreeing": found.restarts_agreeing, "truth_found": all(right),
            "labels_explained": found.labels_explained,
            "runner_up_labels_explained": found.runner_up_labels_explained,
            "load_average_1m": [load_before, load_average()]}


def run_task(name: str, noise: float, seed: int, compared=None) -> dict:
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
    truth = np.argsort(relabel)
    row = {"task": name, "positions": positions, "examples": int(len(concepts)),
           **timed_search(search_naming, circuit, clusters, labels, seed, truth, domains, relabel)}
    if compared is not None:
        row["compared"] = timed_search(compared.search_naming, circuit, clusters, labels, seed, truth, domains,
                                       relabel)
        row["speedup"] = row["compared"]["seconds"] / row["seconds"]
        row["cpu_speedup"] = row["compared"]["cpu_seconds"] / row["cpu_seconds"]
    return row


def markdown(rows: list) -> str:
    compared = any("compared" in row for row in rows)
    header = ("| task | positions | examples | method | seconds (CPU) | restarts (agreeing) | planted naming found "
              "| labels explained (runner-up) | load before, after |")
    lines = [header + (" compared: seconds (CPU), restarts, found | speedup (CPU) |" if compared else ""),
             "|---|---:|---:|---|---:|---|---|---|---|" + ("---|---:|" if compared else "")]
    for row in rows:
        line = (f"| {row['task']} | {row['positions']} | {row['examples']} | {row['method']} | "
                f"{row['seconds']:.1f} ({row['cpu_seconds']:.1f}) | {row['restarts']} ({row['restarts_agreeing']}) | "
                f"{'yes' if row['truth_found'] else 'no'} | "
                f"{100 * row['labels_explained']:.1f} % ({100 * row['runner_up_labels_explained']:.1f} %) | "
                f"{', '.join(map(str, row['load_average_1m']))} |")
        if "compared" in row:
            other = row["compared"]
            line += (f" {other['seconds']:.1f} ({other['cpu_seconds']:.1f}), {other['restarts']}, "
                     f"{'yes' if other['truth_found'] else 'no'} | {row['speedup']:.2f} ({row['cpu_speedup']:.2f}) |")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", metavar="FILE", help="another naming module to time on the same examples")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "naming_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    compared = load_module(args.compare) if args.compare else None
    rows = []
    for name in args.tasks:
        rows.append(run_task(name, args.noise, args.seed, compared))
        print(f"{name}: {rows[-1]['seconds']:.1f} s ({rows[-1]['cpu_seconds']:.1f} s CPU), truth found "
              f"{rows[-1]['truth_found']}" + (f", compared {rows[-1]['compared']['seconds']:.1f} s"
                                              if compared else ""), flush=True)
    result = {"benchmark": "naming_speed", "noise": args.noise, "seed": args.seed, "threads": args.threads,
              "compared": args.compare, "rows": rows, **machine_info()}
    result["markdown"] = markdown(rows)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
