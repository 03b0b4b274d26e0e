"""MNIST-addition benchmark: train N-digit addition with the semantic loss over several seeds.

Reports, after epoch 1 and after the last epoch, the test sum accuracy (all N+1 sum digits
right) as mean ± std over seeds, the digit (concept) accuracy, the seconds per training
epoch (training only, without evaluation) and the prediction method of the circuit
("exact" over all sums when there are at most circuit.max_label_candidates of them, else
the labels of the argmax digits). Writes benchmarks/results/addition_n{N}.json.

    python benchmarks/addition.py --n 1                      # 3 seeds x 5 epochs (full protocol)
    python benchmarks/addition.py --n 4 --seeds 3            # epochs from tasks/mnist_addition_n4.yaml
    python benchmarks/addition.py --n 1 --train-examples 300 --epochs 1 --seeds 1   # quick check

Seeds as separate jobs (one per core or machine), then one result:

    python benchmarks/addition.py --n 15 --seeds 1 --first-seed 1 --out /tmp/n15_seed1.json
    python benchmarks/addition.py --n 15 --merge /tmp/n15_seed0.json /tmp/n15_seed1.json ...

Each seed also changes the data split (the task's seed draws the image tuples), as in
DeepProbLog's protocol. Task files: N=1 tasks/mnist_addition.yaml, N=2/4/15
tasks/mnist_addition_n{N}.yaml, any other N tasks/mnist_addition.yaml with `N=<n>`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (RESULTS, ROOT, machine_info, merge_results, merged_machine, resolved_config, spread,  # noqa: E402
                    write_result)


def task_file(n: int) -> Path:
    specific = ROOT / "tasks" / f"mnist_addition_n{n}.yaml"
    return specific if n != 1 and specific.exists() else ROOT / "tasks" / "mnist_addition.yaml"


def run_seed(args, seed: int, run_dir: Path) -> dict:
    from nesy_gedi.config import load_config
    from nesy_gedi.runs import read_metrics
    from nesy_gedi.train import train

    overrides = [f"N={args.n}", f"train.seed={seed}", "train.progress=false",
                 f"train.num_threads={args.threads}"]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    elif args.n == 1:
        overrides.append("train.epochs=5")
    for key, value in (("data.train_examples", args.train_examples), ("data.test_examples", args.test_examples),
                       ("train.batch_size", args.batch), ("train.lr", args.lr),
                       ("train.lr_schedule", args.lr_schedule), ("circuit.compile", args.compile)):
        if value is not None:
            overrides.append(f"{key}={value}")
    overrides += args.set
    config = load_config(args.task or task_file(args.n), overrides)
    final = train(config, run_dir, data_root=args.data_root, device=args.device)
    records = [r for r in read_metrics(run_dir) if "epoch" in r]
    return {
        "seed": seed,
        "epochs": [{"epoch": r["epoch"], "sum_accuracy": r.get("test_label_accuracy"),
                    "digit_accuracy": r.get("test_concept_accuracy"), "seconds": r.get("seconds"),
                    "train_semantic_loss": r.get("train_semantic")} for r in records],
        "prediction": final.get("prediction"),
        "seconds_per_epoch": final.get("seconds_per_epoch"),
        "test_examples": final.get("test_examples"),
        "config": config.to_dict(),
    }


def summarise(runs: list) -> dict:
    last_epoch = min(len(r["epochs"]) for r in runs)
    summary = {}
    for name, index in (("epoch_1", 0), (f"epoch_{last_epoch}", last_epoch - 1)):
        sums = spread([r["epochs"][index]["sum_accuracy"] for r in runs])
        digits = spread([r["epochs"][index]["digit_accuracy"] for r in runs])
        seconds = spread([r["epochs"][index]["seconds"] for r in runs])
        summary[name] = {
            "epoch": index + 1,
            "sum_accuracy_mean": sums["mean"], "sum_accuracy_std": sums["std"],
            "digit_accuracy_mean": digits["mean"], "digit_accuracy_std": digits["std"],
            "seconds_this_epoch_mean": seconds["mean"],
        }
    every_epoch = spread([e["seconds"] for r in runs for e in r["epochs"]])
    summary["seconds_per_epoch_mean"], summary["seconds_per_epoch_std"] = every_epoch["mean"], every_epoch["std"]
    summary["prediction"] = sorted({r["prediction"] for r in runs})
    return summary


def print_table(n: int, runs: list, summary: dict, train_examples: int | None) -> None:
    print(f"MNIST-addition N={n}: {len(runs)} seed(s), "
          f"{'all' if train_examples is None else train_examples} training examples, "
          f"{runs[0]['test_examples']} test examples, prediction {', '.join(summary['prediction'])}")
    header = f"{'after':>9} {'sum accuracy':>17} {'digit accuracy':>17} {'s/epoch':>9}"
    print(header)
    print("-" * len(header))

    def pct(mean, std):
        return "-" if mean is None else f"{100 * mean:6.2f} ± {100 * std:5.2f}"

    for key, row in summary.items():
        if not key.startswith("epoch_"):
            continue
        print(f"{'epoch ' + str(row['epoch']):>9} {pct(row['sum_accuracy_mean'], row['sum_accuracy_std']):>17} "
              f"{pct(row['digit_accuracy_mean'], row['digit_accuracy_std']):>17} "
              f"{row['seconds_this_epoch_mean']:>9.1f}")
    print(f"seconds per epoch (all epochs, all seeds): {summary['seconds_per_epoch_mean']:.1f} "
          f"± {summary['seconds_per_epoch_std']:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1, help="digits per number (default 1)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+S-1 (default 0); run seeds as separate jobs, then --merge")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine results of the same task and settings written by separate runs "
                             "(different seeds) into one result; trains nothing")
    parser.add_argument("--epochs", type=int, help="default: 5 for N=1, else the task file's")
    parser.add_argument("--threads", "--num-threads", dest="threads", type=int, default=1,
                        help="train.num_threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--train-examples", type=int, help="subset of the training examples per epoch")
    parser.add_argument("--test-examples", type=int, help="subset of the test examples")
    parser.add_argument("--batch", type=int, help="train.batch_size (default: the task file's)")
    parser.add_argument("--lr", type=float, help="train.lr (default: the task file's)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"))
    parser.add_argument("--compile", choices=("true", "false", "auto"),
                        help="circuit.compile (default: the task file's, i.e. auto = on CUDA only)")
    parser.add_argument("--task", help="task file (default: chosen from --n)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--data-root", help="default $NESY_GEDI_DATA")
    parser.add_argument("--keep-runs", help="keep the run directories under this folder")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/addition_n{N}.json)")
    args = parser.parse_args(argv)

    if args.merge:
        return merge(args)

    import torch

    torch.set_num_threads(args.threads)
    runs = []
    scratch = Path(args.keep_runs) if args.keep_runs else Path(tempfile.mkdtemp(prefix="nesy-addition-"))
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run_dir = scratch / f"addition_n{args.n}_seed{seed}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            runs.append(run_seed(args, seed, run_dir))
            last = runs[-1]["epochs"][-1]
            print(f"seed {seed}: epoch {last['epoch']} sum accuracy {last['sum_accuracy']:.4f}, "
                  f"digit accuracy {last['digit_accuracy']:.4f}, {runs[-1]['seconds_per_epoch']:.1f} s/epoch",
                  file=sys.stderr, flush=True)
    finally:
        if not args.keep_runs:
            shutil.rmtree(scratch, ignore_errors=True)
    task = Path(args.task or task_file(args.n)).resolve()
    result = {
        "benchmark": "addition",
        "N": args.n,
        "machine": machine_info(str(args.device)),
        "threads": args.threads,
        "task": str(task.relative_to(ROOT)) if task.is_relative_to(ROOT) else str(task),
        "seeds": len(runs),
        "train_examples": runs[0]["config"]["data"]["train_examples"],
        "runs": [{k: v for k, v in r.items() if k != "config"} for r in runs],
        "config_first_seed": runs[0]["config"],
    }
    return finish(args, result)


def finish(args, result: dict) -> int:
    runs = result["runs"]
    result["summary"] = summarise(runs)
    print_table(result["N"], runs, result["summary"], result["train_examples"])
    path = write_result(Path(args.out) if args.out else RESULTS / f"addition_n{result['N']}.json", result)
    print(f"wrote {path}")
    return 0


def merge(args) -> int:
    """One result from several files of the same task and settings (seeds run as separate jobs).
    Refuses files whose configurations differ in anything but train.seed, or that repeat a seed."""

    def first_config(part):  # a result file names it config_first_seed or config_seed0
        return part.get("config_first_seed", part.get("config_seed0"))

    def settings(part):
        config = resolved_config(first_config(part))
        config["train"].pop("seed", None)
        return part["N"], part["task"], part["threads"], config

    parts, runs = merge_results(args.merge, settings, run_key=lambda run: run["seed"])
    result = {key: value for key, value in parts[0].items() if key != "config_seed0"}
    result.update(runs=runs, seeds=len(runs), config_first_seed=first_config(parts[0]))
    # The provenance names the merge command; each part keeps its own command, date and load.
    result["machine"] = merged_machine(parts, args.merge)
    return finish(args, result)


if __name__ == "__main__":
    sys.exit(main())
