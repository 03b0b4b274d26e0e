"""What the semantic loss does to good clusters with arbitrary names, and what fixes it.

A pretrained clustering backbone (GEDI, no-gen) separates the digits but numbers its
clusters arbitrarily. This probe builds such a backbone without the cost of pretraining:
a digit classifier trained with concept labels, whose output rows are then permuted at
random (seeded) — right clusters, wrong names, cluster accuracy as high as the classifier's
digit accuracy. From it, small-data MNIST-addition is trained with

    init        model.init, the semantic loss at once (what `train --set model.init=` does)
    init+map    map.epochs: first only a cluster -> digit map on the frozen backbone
    scratch     no backbone: the reference

and each run's validation and test concept accuracy is reported (mean ± std over the
permutations, one per seed). Settings are fixed before the runs: the task file's, with
map.epochs 10 and map.lr 0.05.

    python benchmarks/permuted_clusters.py                   # 3 seeds, 100 and 300 pairs
    python benchmarks/permuted_clusters.py --seeds 1 --pairs 100 --epochs 20   # quick look
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info, spread  # noqa: E402
from nesy_gedi.config import load_config  # noqa: E402
from nesy_gedi.runs import CHECKPOINT, FINAL, load_checkpoint, save_checkpoint, write_json  # noqa: E402
from nesy_gedi.train import train  # noqa: E402

ADDITION = REPO / "tasks" / "mnist_addition.yaml"
SMALL = REPO / "tasks" / "mnist_addition_small.yaml"
HEAD = ("backbone.classifier.4.weight", "backbone.classifier.4.bias")
VARIANTS = {"scratch": [], "init": ["model.init={backbone}"],
            "init+map": ["model.init={backbone}", "map.epochs=10", "map.lr=0.05", "map.search=false"]}


def digit_classifier(runs: Path, data_root: str | None) -> Path:
    """A digit classifier: addition pairs with every concept observed (the cluster quality to aim for)."""
    run_dir = runs / "classifier"
    if not (run_dir / FINAL).exists():
        config = load_config(ADDITION, ["train.mode=sl+concepts", "train.concept_supervision=1.0",
                                        "data.train_examples=5000", "data.test_examples=1000", "train.epochs=2",
                                        "train.progress=false", "train.num_threads=1"])
        train(config, run_dir, resume=(run_dir / CHECKPOINT).exists(), data_root=data_root)
    return run_dir


def permuted_backbone(classifier: Path, seed: int, runs: Path) -> tuple[Path, list]:
    """The classifier with its output rows permuted (seeded): a checkpoint `model.init` accepts."""
    checkpoint = load_checkpoint(classifier)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1000 + seed))
    weights = dict(checkpoint["weights"])
    for key in HEAD:
        weights[key] = weights[key][order].clone()
    target = runs / f"permuted_seed{seed}"
    target.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"kind": "train", "format": checkpoint["format"], "epoch": checkpoint["epoch"],
                     "weights": weights}, target)
    write_json(target / "run.json", {"kind": "train", "permutation": order.tolist()})
    return target, order.tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the task file's 100)")
    parser.add_argument("--data-root")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "benchmarks" / "permuted_clusters"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "permuted_clusters.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs, started = Path(args.runs_dir), time.perf_counter()
    classifier = digit_classifier(runs, args.data_root)
    classifier_accuracy = json.loads((classifier / FINAL).read_text())["test_concept_accuracy"]
    records = []
    for pairs in args.pairs:
        for seed in range(args.seeds):
            backbone, permutation = permuted_backbone(classifier, seed, runs)
            for variant, overrides in VARIANTS.items():
                settings = [o.format(backbone=backbone) for o in overrides] + [
                    f"data.train_examples={pairs}", "data.val_examples=200", "data.test_examples=2000",
                    f"train.seed={seed}", "train.progress=false", "train.num_threads=1"]
                if args.epochs:
                    settings.append(f"train.epochs={args.epochs}")
                run_dir = runs / f"pairs{pairs}" / variant / f"seed{seed}"
                if not (run_dir / FINAL).exists():
                    train(load_config(SMALL, settings), run_dir, resume=(run_dir / "config.yaml").exists(),
                          data_root=args.data_root)
                final = json.loads((run_dir / FINAL).read_text())
                records.append({"pairs": pairs, "variant": variant, "seed": seed, "permutation": permutation,
                                **{k: final.get(k) for k in ("val_label_accuracy", "val_concept_accuracy",
                                                             "test_label_accuracy", "test_concept_accuracy")}})
                print(f"{pairs} pairs, {variant:8s} seed {seed}: concept acc test "
                      f"{records[-1]['test_concept_accuracy']:.3f} val {records[-1]['val_concept_accuracy']:.3f}",
                      flush=True)
    table = []
    for pairs in args.pairs:
        for variant in VARIANTS:
            group = [r for r in records if r["pairs"] == pairs and r["variant"] == variant]
            table.append({"pairs": pairs, "variant": variant, "seeds": len(group),
                          **{k: spread([r[k] for r in group]) for k in
                             ("val_label_accuracy", "test_label_accuracy", "test_concept_accuracy")}})
    lines = [f"Backbone: a digit classifier ({100 * classifier_accuracy:.1f} % digit accuracy) with its output "
             "rows permuted, one permutation per seed.", "",
             "| pairs | start | seeds | val label acc | test label acc | test concept acc |", "|---:|---|---:|---:|---:|---:|"]
    for row in table:
        cells = [f"{100 * row[k]['mean']:.1f} ± {100 * row[k]['std']:.1f}" for k in
                 ("val_label_accuracy", "test_label_accuracy", "test_concept_accuracy")]
        lines.append(f"| {row['pairs']} | {row['variant']} | {row['seeds']} | " + " | ".join(cells) + " |")
    result = {"benchmark": "permuted_clusters", "classifier_concept_accuracy": classifier_accuracy,
              "settings": {"seeds": args.seeds, "pairs": args.pairs, "epochs": args.epochs, "variants": VARIANTS},
              "seconds": round(time.perf_counter() - started, 1), "table": table, "runs": records,
              "markdown": "\n".join(lines), "machine": machine_info("cpu")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + "\n".join(lines) + f"\n\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
