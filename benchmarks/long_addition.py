"""Long MNIST-addition (N = 15, 100, 500, 1000 digits) at the perception limit.

Each example shows 2N MNIST images and is labelled with the N+1 digits of the sum; every
training image is used once per epoch and the test sums are drawn from the 10,000 test
images (DeepProbLog's protocol, as in DeepProofLog's Table 1). A sum is right only when all
2N digits are read right, so the sum accuracy is bounded by digit_accuracy ** (2N).

Methods (one train run per method, N and seed, each on one torch thread):
  named       the label-free no-gen backbone of the same seed (tasks/gedi_mnist_nogen.yaml),
              its clusters named through the addition knowledge (map.search), one map epoch,
              then the semantic loss: no digit label anywhere;
  supervised  the same backbone and schedule with every digit label (train.mode=sl+concepts,
              concept_supervision 1): this perception's ceiling;
  scratch     the semantic loss from random initialisation.

Settings are fixed before any run and chosen on no test figure: the N = 15 task file's
optimiser, schedule and augmentation (Adam 1e-3, cosine, stroke augmentation), 30 epochs
after the map epoch (a third of that file's 100), and a batch of about 480 images per step
(16 examples at N = 15, 2 at N = 100, 1 above). No checkpoint is selected: the last epoch counts.

Beside the protocol's figure (test_sums sums: 50 at N = 100, 5 at N = 1000), each row gives
the sum accuracy expected over uniformly random pairings of the same test images: with k of
n test digits wrong, P(all 2N digits of a sum right) = C(n - k, 2N) / C(n, 2N) exactly, and a
95 % interval from the Clopper-Pearson interval of the digit accuracy raised to the power 2N.

    python benchmarks/long_addition.py                       # the table: N 15 100 500 1000, 3 seeds
    python benchmarks/long_addition.py --n 100 --seeds 1 --epochs 2 --out /tmp/long.json

The cost of the compiled layer, without training: one semantic-loss step against one
supervised step (cross-entropy on the digits) on the same images and network, median of
--reps alternating repetitions in one process, the circuit's own forward and backward, its
size and the process's peak memory:

    python benchmarks/long_addition.py --step-costs --n 15 100 500 1000 \
        --out benchmarks/results/long_addition_steps.json

Runs live in --runs-dir (RUNS/METHOD/nN/seedS) and are reused when their final.json exists
with the same configuration; the backbones in --pretrain-dir, one per seed, shared with any
other task that names the same pretraining.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info, render_table, same_run_config, spread, write_result  # noqa: E402
from nesy_gedi import KnowledgeCircuit, compile_file, semantic_loss  # noqa: E402
from nesy_gedi.config import load_config  # noqa: E402
from nesy_gedi.models.backbones import build_backbone  # noqa: E402
from nesy_gedi.errors import NesyError  # noqa: E402
from nesy_gedi.metrics import all_right_probability  # noqa: E402
from nesy_gedi.runs import CHECKPOINT, FINAL, load_run_config, read_metrics  # noqa: E402
from nesy_gedi.train import train  # noqa: E402

TASK = REPO / "tasks" / "mnist_addition_n15.yaml"
BACKBONE = "tasks/gedi_mnist_nogen.yaml"
IMAGES_PER_STEP = 480  # the N = 15 task file's batch: 16 examples of 30 images
# A balanced tree over the columns' blocks: the circuit's depth grows with log N instead of N
# (31 layers instead of about 2,000 at N = 1000), at the same size.
VTREE = "block-tree"
METHODS = {
    "named": [f"model.pretrain={BACKBONE}", "map.epochs=1", "map.lr=0.05"],
    "supervised": [f"model.pretrain={BACKBONE}", "map.epochs=1", "map.lr=0.05", "train.mode=sl+concepts",
                   "train.concept_supervision=1.0"],
    "scratch": [],
}
METHOD_NAMES = {"named": "no-gen backbone, named + semantic loss",
                "supervised": "supervised (all digit labels)",
                "scratch": "semantic loss from scratch"}
PUBLISHED = REPO / "benchmarks" / "published.yaml"  # the peers' figures, shared with benchmarks/report.py


def peers() -> list[dict]:
    """Published long-addition figures: [{N, system, accuracy, minutes?}] from benchmarks/published.yaml."""
    table = yaml.safe_load(PUBLISHED.read_text())["long_addition"]
    return [{"N": int(n), **entry} for n, entries in table.items() for entry in entries]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[15, 100, 500, 1000], help="digits per number")
    parser.add_argument("--methods", nargs="+", default=["named"], choices=sorted(METHODS))
    parser.add_argument("--supervised-n", type=int, nargs="*", default=[15],
                        help="N at which the supervised ceiling also runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeds-at", action="append", default=[], metavar="N=SEEDS",
                        help="fewer (or more) seeds at one N, e.g. 1000=1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="semantic-loss epochs after the map epoch")
    parser.add_argument("--workers", type=int, default=1, help="runs trained side by side, one thread each")
    parser.add_argument("--runs-dir", default="runs/benchmarks/long_addition")
    parser.add_argument("--pretrain-dir", default="runs/pretrained", help="the store of label-free backbones")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", nargs="+", metavar="METHOD:N:SEED",
                        help="train exactly these runs, in this order, instead of the grid")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: the result from the grid's finished runs, the others listed as missing")
    parser.add_argument("--step-costs", action="store_true", help="measure step costs instead of training")
    parser.add_argument("--reps", type=int, default=20, help="with --step-costs: timed repetitions")
    parser.add_argument("--out", default=str(RESULTS / "long_addition.json"))
    return parser.parse_args(argv)


def batch_size(n: int) -> int:
    return max(1, round(IMAGES_PER_STEP / (2 * n)))


def run_config(method: str, n: int, seed: int, args):
    overrides = [f"N={n}", f"logic.vtree={VTREE}", f"train.batch_size={batch_size(n)}", f"train.epochs={args.epochs}",
                 f"train.seed={seed}", "train.num_threads=1", "train.progress=false",
                 f"model.pretrain_dir={Path(args.pretrain_dir).resolve()}", *METHODS[method], *args.overrides]
    if not METHODS[method]:
        overrides = [o for o in overrides if not o.startswith("model.pretrain_dir=")]
    return load_config(TASK, overrides)


def run_one(method: str, n: int, seed: int, args) -> Path:
    """Train (or reuse, or resume) one run; returns its directory."""
    config = run_config(method, n, seed, args)
    run_dir = Path(args.runs_dir) / method / f"n{n}" / f"seed{seed}"
    same = same_run_config(run_dir, config)
    if same and (run_dir / FINAL).exists():
        return run_dir
    if run_dir.exists() and not same:
        shutil.rmtree(run_dir)
    train(config, run_dir, resume=(run_dir / CHECKPOINT).exists(), data_root=args.data_root, device=args.device)
    return run_dir


def backbone_record(run_dir: Path) -> dict | None:
    """The label-free backbone a run started from: its clustering figures and pretraining minutes."""
    init = load_run_config(run_dir).model.init
    if not init or not (Path(init) / FINAL).exists():
        return None
    final = json.loads((Path(init) / FINAL).read_text())
    seconds = sum(r.get("seconds", 0.0) for r in read_metrics(Path(init)) if "epoch" in r)
    return {"run": str(init), "cluster_accuracy": final.get("cluster_accuracy"),
            "val_cluster_accuracy": final.get("val_cluster_accuracy"), "minutes": seconds / 60}


def run_record(method: str, n: int, seed: int, run_dir: Path) -> dict:
    final = json.loads((run_dir / FINAL).read_text())
    examples = final["test_examples"]
    images = examples * 2 * n
    digit_accuracy = final["test_concept_accuracy"]
    wrong = round((1.0 - digit_accuracy) * images)
    epochs = [r for r in read_metrics(run_dir) if "epoch" in r and "event" not in r]
    return {
        "method": method, "N": n, "seed": seed, "run": str(run_dir),
        "sum_accuracy": final["test_label_accuracy"], "digit_accuracy": digit_accuracy,
        "expected_sum_accuracy": all_right_probability(wrong, images, 2 * n),
        "test_sums": examples, "test_images": images, "wrong_digits": wrong,
        "epochs": len(epochs), "minutes": final["seconds_total"] / 60,
        "naming": {k: (final.get("naming") or {}).get(k) for k in ("seconds", "labels_explained", "agreeing")},
        "backbone": backbone_record(run_dir),
        "sum_accuracy_by_epoch": [r.get("test_label_accuracy") for r in epochs],
        "digit_accuracy_by_epoch": [r.get("test_concept_accuracy") for r in epochs],
    }


def summarise(runs: list, threads: int) -> list:
    rows = []
    for method, n in dict.fromkeys((r["method"], r["N"]) for r in runs):
        group = [r for r in runs if r["method"] == method and r["N"] == n]
        backbone_minutes = spread([r["backbone"]["minutes"] for r in group if r["backbone"]])
        expected = [r["expected_sum_accuracy"] for r in group]
        rows.append({
            "N": n, "method": METHOD_NAMES[method], "method_key": method, "seeds": [r["seed"] for r in group],
            "epochs": group[0]["epochs"], "test_sums": group[0]["test_sums"],
            "sum_accuracy": _mean_std(r["sum_accuracy"] for r in group),
            "digit_accuracy": _mean_std(r["digit_accuracy"] for r in group),
            "expected_sum_accuracy": {"mean": sum(e["mean"] for e in expected) / len(expected),
                                      "low": min(e["low"] for e in expected), "high": max(e["high"] for e in expected)},
            "minutes": _mean_std(r["minutes"] for r in group),
            "backbone_minutes": {"mean": backbone_minutes["mean"], "std": backbone_minutes["std"]}
            if backbone_minutes else None,
            "threads": threads,
        })
    return rows


def _mean_std(values) -> dict:
    stats = spread(list(values))
    return {"mean": stats["mean"], "std": stats["std"]}


def markdown(rows: list) -> str:
    header = ["N", "method", "seeds", "sum acc. (protocol)", "expected sum acc. [95 %]", "digit acc.",
              "minutes (+ backbone)"]
    lines = []
    for row in rows:
        s, d, e, m = row["sum_accuracy"], row["digit_accuracy"], row["expected_sum_accuracy"], row["minutes"]
        backbone = f" + {row['backbone_minutes']['mean']:.0f}" if row["backbone_minutes"] else ""
        lines.append([row["N"], row["method"], len(row["seeds"]),
                      f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} ({row['test_sums']} sums)",
                      f"{100 * e['mean']:.1f} [{100 * e['low']:.1f}, {100 * e['high']:.1f}]",
                      f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}", f"{m['mean']:.1f}{backbone}"])
    for peer in peers():
        lines.append([peer["N"], f"{peer['system']} (published)", "", peer["accuracy"], "", "",
                      str(peer.get("minutes", ""))])
    lines.sort(key=lambda cells: cells[0])
    return render_table(header, lines)


def step_costs(n: int, reps: int, vtree: str) -> dict:
    """Seconds of one semantic-loss step and one supervised step on the same batch of about
    IMAGES_PER_STEP images (the benchmark's batch), and of the circuit alone."""
    torch.manual_seed(0)
    started = time.perf_counter()
    circuit = KnowledgeCircuit(compile_file(REPO / "logic" / "addition.logic", {"N": n}, vtree_type=vtree))
    load_seconds = time.perf_counter() - started
    batch = batch_size(n)
    net = build_backbone("mnist_net", 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images = torch.rand(batch * 2 * n, 1, 28, 28)
    digits = torch.randint(10, (batch, 2 * n))
    labels, consistent = circuit.deduce_labels(circuit.concept_positions(digits))
    assert bool(consistent.all())

    def semantic_step():
        log_probs = F.log_softmax(net(images), dim=-1).view(batch, 2 * n, 10)
        return semantic_loss(circuit(log_probs, labels))

    def supervised_step():
        return F.cross_entropy(net(images), digits.flatten())

    def circuit_step():
        log_probs = F.log_softmax(torch.randn(batch, 2 * n, 10, requires_grad=True), dim=-1)
        return semantic_loss(circuit(log_probs, labels))

    def timed(step) -> float:
        begin = time.perf_counter()
        optimizer.zero_grad()
        step().backward()
        optimizer.step()
        return time.perf_counter() - begin

    seconds = {"semantic": [], "supervised": [], "circuit": []}
    for rep in range(reps + 2):  # two warm-up rounds
        for name, step in (("semantic", semantic_step), ("supervised", supervised_step), ("circuit", circuit_step)):
            elapsed = timed(step)
            if rep >= 2:
                seconds[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    summary = circuit.compiled.summary()
    return {"N": n, "vtree": vtree, "layers": len(circuit.module.layers), "batch_examples": batch, "images": batch * 2 * n, "reps": reps,
            "semantic_step_seconds": median["semantic"], "supervised_step_seconds": median["supervised"],
            "circuit_seconds": median["circuit"], "ratio_semantic_to_supervised": median["semantic"] / median["supervised"],
            "circuit_share": median["circuit"] / median["semantic"], "sdd_size": summary.get("sdd_size"),
            "circuit_load_seconds": load_seconds,
            "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def step_costs_main(args) -> int:
    torch.set_num_threads(1)
    rows = [step_costs(n, args.reps, vtree) for n in sorted(args.n) for vtree in ("blocks", VTREE)]
    header = ["N", "vtree", "layers", "images/step", "SL step s", "supervised step s", "ratio", "circuit share", "SDD size",
              "peak MiB"]
    table = render_table(header, [[r["N"], r["vtree"], r["layers"], r["images"], f"{r['semantic_step_seconds']:.3f}",
                                   f"{r['supervised_step_seconds']:.3f}", f"{r['ratio_semantic_to_supervised']:.2f}",
                                   f"{100 * r['circuit_share']:.1f} %", r["sdd_size"], f"{r['peak_memory_mib']:.0f}"]
                                  for r in rows])
    machine = machine_info(args.device)
    write_result(Path(args.out), {"benchmark": "long_addition_steps", "command": machine["command"],
                                  "machine": machine, "rows": rows, "markdown": table})
    print(table)
    print(f"\nwritten: {args.out}")
    return 0


def _job(item: str) -> tuple[str, int, int]:
    method, n, seed = (item.split(":") + ["", "", ""])[:3]
    if method not in METHODS or not n.isdigit() or not seed.isdigit():
        raise SystemExit(f"long_addition: --jobs {item!r}: expected METHOD:N:SEED with METHOD one of "
                         f"{', '.join(sorted(METHODS))}, e.g. named:100:0")
    return method, int(n), int(seed)


def finished(method: str, n: int, seed: int, args) -> Path | None:
    """The run's directory when it finished with the configuration the grid asks for."""
    run_dir = Path(args.runs_dir) / method / f"n{n}" / f"seed{seed}"
    finished_here = (run_dir / FINAL).exists() and same_run_config(run_dir, run_config(method, n, seed, args))
    return run_dir if finished_here else None


def seeds_by_n(args) -> dict[int, range]:
    counts = {n: args.seeds for n in {*args.n, *args.supervised_n}}
    for item in args.seeds_at:
        n, _, count = item.partition("=")
        if not (n.isdigit() and count.isdigit() and int(count) >= 1):
            raise SystemExit(f"long_addition: --seeds-at {item!r}: expected N=SEEDS, e.g. 1000=1")
        counts[int(n)] = int(count)
    return {n: range(args.first_seed, args.first_seed + count) for n, count in counts.items()}


def jobs(args) -> list[tuple[str, int, int]]:
    if args.jobs:
        return [_job(item) for item in args.jobs]
    seeds = seeds_by_n(args)
    planned = [(m, n, s) for n in args.n for m in args.methods for s in seeds[n]]
    if "supervised" not in args.methods:
        planned += [("supervised", n, s) for n in args.supervised_n for s in seeds[n]]
    # One backbone's runs together (each waits for its backbone), the longest first.
    return sorted(dict.fromkeys(planned), key=lambda job: (job[0] != "named", job[2], -job[1]))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.step_costs:
        return step_costs_main(args)
    planned = jobs(args)
    started = time.perf_counter()
    runs, missing = [], []
    if args.report_only:
        for job in planned:
            run_dir = finished(*job, args)
            if run_dir is None:
                missing.append(":".join(map(str, job)))
            else:
                runs.append(run_record(*job, run_dir))
        print(f"{len(runs)} finished runs, {len(missing)} missing: {' '.join(missing) or '-'}")
        if not runs:
            raise SystemExit("long_addition: no finished run to report")
    to_train = [] if args.report_only else planned
    pool = (ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
            if args.workers > 1 and to_train else None)
    futures = [pool.submit(run_one, *job, args) for job in to_train] if pool else None
    try:
        for done, job in enumerate(to_train, start=1):
            run_dir = futures[done - 1].result() if pool else run_one(*job, args)
            runs.append(run_record(*job, run_dir))
            print(f"[{done}/{len(planned)}] {job[0]} N={job[1]} seed {job[2]}: sum {runs[-1]['sum_accuracy']:.3f}"
                  f"  digits {runs[-1]['digit_accuracy']:.4f}  {runs[-1]['minutes']:.1f} min", flush=True)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    rows = summarise(runs, threads=1)
    result = {
        "benchmark": "long_addition",
        # What regenerates this file: the same grid, training what is missing.
        "command": machine_info(args.device)["command"].replace(" --report-only", ""),
        "machine": {**machine_info(args.device), "torch_threads": 1, "workers": args.workers},
        "settings": {"task": str(TASK.relative_to(REPO)), "backbone": BACKBONE, "epochs": args.epochs,
                     "images_per_step": IMAGES_PER_STEP, "overrides": args.overrides},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "missing": missing,
        "peers": peers(),
        "runs": runs,
        "markdown": markdown(rows),
    }
    write_result(Path(args.out), result)
    print()
    print(result["markdown"])
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NesyError as error:
        print(f"long_addition benchmark: error: {error}", file=sys.stderr)
        sys.exit(2)
