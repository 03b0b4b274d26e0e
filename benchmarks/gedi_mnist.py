"""GEDI vs its ablations (no-gen, jem) pretrained on MNIST without labels.

    python benchmarks/gedi_mnist.py                                   # tasks/gedi_mnist.yaml as it is
    python benchmarks/gedi_mnist.py --epochs 1 --seeds 1 --train-images 512 --test-images 1000

Each run is `nesy_gedi.pretrain.pretrain` on tasks/gedi_mnist.yaml with gedi.method and
train.seed overridden. Reported per method (mean ± std over seeds): Hungarian cluster
accuracy, NMI and ARI on the MNIST test set; OOD AUROC of the energy score against the
Fashion-MNIST test set and against uniform noise; seconds per epoch; non-finite recoveries.

Writes benchmarks/results/gedi_mnist.json (--out), prints a table, and copies the seed-0 SGLD
samples and energy histograms beside it as <out stem>_<method>_{samples,energies}.png, so
result files never overwrite each other's figures.
The data root comes from --data-root, else NESY_GEDI_DATA, else the user cache folder.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from nesy_gedi.config import SELF_SUPERVISED_METHODS, load_config  # noqa: E402
from nesy_gedi.errors import NesyError  # noqa: E402
from nesy_gedi.pretrain import pretrain  # noqa: E402
from nesy_gedi.runs import read_metrics  # noqa: E402
from common import machine_info, mean_std, merge_results, merged_machine, render_table  # noqa: E402

METHODS = ("gedi", "no-gen", "jem")
CURVE_KEYS = ("epoch", "cluster_accuracy", "nmi", "ood_auroc")
TABLE = (  # key, header, format
    ("val_cluster_accuracy", "val acc", "{:.3f}"),
    ("val_ood_auroc", "val AUROC", "{:.3f}"),
    ("cluster_accuracy", "acc", "{:.3f}"),
    ("nmi", "NMI", "{:.3f}"),
    ("ari", "ARI", "{:.3f}"),
    ("ood_auroc", "AUROC fashion", "{:.3f}"),
    ("ood_auroc_noise", "AUROC noise", "{:.3f}"),
    ("largest_cluster", "largest", "{:.2f}"),
    ("seconds_per_epoch", "s/epoch", "{:.1f}"),
    ("nonfinite_recoveries", "NaN recov.", "{:.1f}"),
    ("rollbacks", "rollbacks", "{:.1f}"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=str(REPO / "tasks" / "gedi_mnist.yaml"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=SELF_SUPERVISED_METHODS)
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+N-1 (default 0), to run seeds as separate jobs")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--train-images", type=int, default=None, help="override data.train_examples")
    parser.add_argument("--test-images", type=int, default=None, help="override data.test_examples")
    parser.add_argument("--data-root", default=None, help="data root (default: NESY_GEDI_DATA, else the cache folder)")
    parser.add_argument("--device", default=None, help="override train.device (auto, cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config override, e.g. --set gedi.sgld.steps=10")
    parser.add_argument("--runs-dir", default=None, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine result files of the same settings but other seeds into --out")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gedi_mnist.json"))
    return parser.parse_args(argv)


def run_one(method: str, seed: int, args, runs_dir: Path) -> dict:
    overrides = [f"gedi.method={method}", f"train.seed={seed}", f"train.progress={str(args.progress).lower()}"]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.train_images is not None:
        overrides.append(f"data.train_examples={args.train_images}")
    if args.test_images is not None:
        overrides.append(f"data.test_examples={args.test_images}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    overrides += args.overrides
    config = load_config(args.task, overrides)
    run_dir = runs_dir / f"{method}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    try:
        final = pretrain(config, run_dir, data_root=args.data_root)
    except NesyError as error:  # e.g. SGLD diverged past train.max_nonfinite_recoveries: report, go on
        return {"method": method, "seed": seed, "error": str(error), "seconds": time.perf_counter() - started}
    row = {key: final.get(key) for key, _, _ in TABLE}
    row.update({"method": method, "seed": seed, "seconds": time.perf_counter() - started,
                "epochs": final["epochs"], "train_inputs": final["train_inputs"], "test_inputs": final["test_inputs"],
                "energy_test": final["energy_test"], "energy_ood": final["energy_ood"],
                "energy_noise": final["energy_noise"], "ood_auroc_by_class": final["ood_auroc_by_class"],
                "curve": evaluation_curve(run_dir), "device": final["device"], "run_dir": str(run_dir)})
    return row


def evaluation_curve(run_dir: Path) -> list[dict]:
    """The test figures of every evaluation epoch in the run's metrics.jsonl: the OOD AUROC of an
    energy-based model moves a lot from epoch to epoch, so the last epoch alone can mislead."""
    return [{key: record[key] for key in CURVE_KEYS if key in record}
            for record in read_metrics(run_dir) if "event" not in record and "nmi" in record]


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        stats = {"runs": len(group), "failed": sum("error" in r for r in group)}
        stats.update(mean_std(group, [key for key, _, _ in TABLE]))
        summary[method] = stats
    return summary


def format_table(summary: dict) -> str:
    header = ["method"] + [h for _, h, _ in TABLE] + ["failed"]
    lines = []
    for method, stats in summary.items():
        cells = [method]
        for key, _, fmt in TABLE:
            s = stats.get(key)
            if s is None:
                cells.append("-")
            elif len(s["values"]) > 1 and key not in ("seconds_per_epoch", "nonfinite_recoveries", "rollbacks"):
                cells.append(f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}")
            else:
                cells.append(fmt.format(s["mean"]))
        cells.append(f"{stats['failed']}/{stats['runs']}")
        lines.append(cells)
    return render_table(header, lines)


def merge(paths: list, out: Path) -> dict:
    """One result from files whose settings differ only in their seeds (seeds run as separate jobs)."""
    def settings(part):
        return {key: value for key, value in part["settings"].items() if key != "seeds"}

    parts, rows = merge_results(paths, settings, run_key=lambda row: (row["method"], row["seed"]))
    summary = summarise(rows)
    result = dict(parts[0], summary=summary, runs=rows,
                  settings=dict(parts[0]["settings"], seeds=sorted({row["seed"] for row in rows})),
                  total_seconds=sum(part["total_seconds"] for part in parts),
                  figures=[figure for part in parts for figure in part.get("figures", [])],
                  markdown="```\n" + format_table(summary) + "\n```", machine=merged_machine(parts, paths))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(summary))
    print(f"\nwrote {out}")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix="gedi_mnist_") if args.runs_dir is None else None
    runs_dir = Path(args.runs_dir or temporary)
    started = time.perf_counter()
    rows, figures = [], []
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    try:
        for method in args.methods:
            for seed in seeds:
                row = run_one(method, seed, args, runs_dir)
                rows.append(row)
                if "error" in row:
                    print(f"{method:7s} seed {seed}: FAILED: {row['error']}", flush=True)
                    continue
                print(f"{method:7s} seed {seed}: acc {row['cluster_accuracy']:.3f}  nmi {row['nmi']:.3f}  "
                      f"auroc(fashion) {row['ood_auroc'] if row['ood_auroc'] is None else round(row['ood_auroc'], 3)}  "
                      f"auroc(noise) {row['ood_auroc_noise']:.3f}  {row['seconds_per_epoch']:.1f}s/epoch", flush=True)
                if seed == 0:
                    for name, suffix in (("samples.png", "samples"), ("energy_histogram.png", "energies")):
                        source = Path(row["run_dir"]) / name
                        if source.exists():
                            target = out.parent / f"{out.stem}_{method}_{suffix}.png"
                            shutil.copyfile(source, target)
                            figures.append(str(target.relative_to(REPO) if target.is_relative_to(REPO) else target))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    for row in rows:
        if temporary is not None:
            row.pop("run_dir", None)
    summary = summarise(rows)
    config = load_config(args.task)
    result = {
        "benchmark": "gedi_mnist",
        "settings": {"task": str(Path(args.task).relative_to(REPO)) if Path(args.task).is_relative_to(REPO)
                     else args.task, "methods": args.methods, "seeds": seeds,
                     "epochs": args.epochs or config.train.epochs,
                     "train_images": args.train_images or config.data.train_examples,
                     "test_images": args.test_images or config.data.test_examples,
                     "overrides": args.overrides, "threads": torch.get_num_threads()},
        "summary": summary,
        "runs": rows,
        "figures": figures,
        "total_seconds": time.perf_counter() - started,
        "torch": torch.__version__,
        "markdown": "```\n" + format_table(summary) + "\n```",
        "machine": machine_info(),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(format_table(summary))
    print(f"\nwrote {out} ({result['total_seconds']:.0f}s)")
    return result


if __name__ == "__main__":
    main()
