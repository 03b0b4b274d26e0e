"""GEDI and its ablations on 2-D toy data: NMI over seeds, plus the measurements that expose
each ablation's failure mode.

    python benchmarks/gedi_toy.py                      # 5 seeds x {jem, no-gen, gedi} x {moons, circles}
    python benchmarks/gedi_toy.py --seeds 1 --epochs 2 # a smoke test

Each run is `nesy_gedi.pretrain.pretrain` on tasks/gedi_<dataset>.yaml with gedi.method and
train.seed overridden. Failure modes and what shows them:

    cluster collapse         largest cluster's share of the test points (1.0 = one cluster),
                             entropy of the mean posterior / log C (0 = collapsed)
    no density model         AUROC data vs uniform noise with the energy score, and the energy
    (representation          gap E(noise) - E(data): a model that learnt no density (no-gen)
     collapse of the EBM)    scores noise like data or better
    arbitrary assignments    balanced, confident, view-invariant clusters (low invariance term,
                             high confidence) whose NMI with the true components is still low

Writes benchmarks/results/gedi_toy.json, prints a table, and saves one figure per data set
with the seed-0 cluster maps and energy landscapes of the three methods
(benchmarks/results/gedi_toy_<dataset>.png). --data-root / NESY_GEDI_DATA are accepted for
symmetry with the image benchmarks (toy data need no files).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nesy_gedi.config import SELF_SUPERVISED_METHODS, load_config  # noqa: E402
from nesy_gedi.data.augment import build_augment  # noqa: E402
from nesy_gedi.objectives import invariance  # noqa: E402
from nesy_gedi.builders import build_model, load_pretrained_backbone  # noqa: E402
from nesy_gedi.data.unlabeled import load_pretrain_data  # noqa: E402
from nesy_gedi.pretrain import pretrain  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from common import machine_info, mean_std, render_table  # noqa: E402

METHODS = ("jem", "no-gen", "gedi")
DATASETS = ("moons", "circles")
TABLE = (  # key, header, format
    ("nmi", "NMI", "{:.3f}"),
    ("cluster_accuracy", "acc", "{:.3f}"),
    ("largest_cluster", "largest", "{:.2f}"),
    ("marginal_entropy", "H(mean p)", "{:.2f}"),
    ("confidence", "conf", "{:.2f}"),
    ("invariance", "inv", "{:.3f}"),
    ("ood_auroc_noise", "AUROC noise", "{:.2f}"),
    ("energy_gap", "E gap", "{:.2f}"),
    ("seconds", "s/run", "{:.1f}"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=SELF_SUPERVISED_METHODS)
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs (smoke tests)")
    parser.add_argument("--data-root", default=None, help="accepted for symmetry; toy data need no files")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these models are tiny, more threads only add overhead)")
    parser.add_argument("--runs-dir", default=None, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gedi_toy.json"))
    return parser.parse_args(argv)


@torch.no_grad()
def failure_mode_measures(config, run_dir: Path) -> dict:
    """Soft-posterior measurements on the test points of a finished run."""
    data = load_pretrain_data(config)
    backbone = build_model(config.model, data.sample_shape)
    load_pretrained_backbone(run_dir, backbone)
    backbone.eval()
    x = data.test.float()
    probs = F.softmax(backbone(x) / config.gedi.temperature, dim=-1)
    marginal = probs.mean(dim=0)
    entropy = float(-(marginal * marginal.clamp_min(1e-12).log()).sum()) / math.log(config.model.num_clusters)
    augment = build_augment(config.gedi.augment, **config.gedi.augment_options)
    generator = torch.Generator().manual_seed(0)
    view_a = backbone(augment(x, generator)) / config.gedi.temperature
    view_b = backbone(augment(x, generator)) / config.gedi.temperature
    return {"marginal_entropy": entropy, "confidence": float(probs.max(dim=-1).values.mean()),
            "invariance": float(invariance(view_a, view_b))}


def run_one(dataset: str, method: str, seed: int, args, runs_dir: Path) -> dict:
    overrides = [f"gedi.method={method}", f"train.seed={seed}", "train.progress=false", f"train.device={args.device}"]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    config = load_config(REPO / "tasks" / f"gedi_{dataset}.yaml", overrides)
    run_dir = runs_dir / f"{dataset}_{method}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    final = pretrain(config, run_dir, data_root=args.data_root)
    seconds = time.perf_counter() - started
    row = {"dataset": dataset, "method": method, "seed": seed, "seconds": seconds,
           "nmi": final["nmi"], "cluster_accuracy": final["cluster_accuracy"], "ari": final["ari"],
           "largest_cluster": final["largest_cluster"], "cluster_entropy": final["cluster_entropy"],
           "ood_auroc_noise": final["ood_auroc_noise"],
           "energy_gap": final["energy_noise"] - final["energy_test"],
           "nonfinite_recoveries": final["nonfinite_recoveries"], "epochs": final["epochs"]}
    row.update(failure_mode_measures(config, run_dir))
    return row


def summarise(rows: list[dict]) -> dict:
    summary: dict = {}
    for row in rows:
        summary.setdefault(row["dataset"], {}).setdefault(row["method"], []).append(row)
    out: dict = {}
    for dataset, by_method in summary.items():
        for method, group in by_method.items():
            keys = [key for key, _, _ in TABLE] + ["ari", "cluster_entropy"]
            out.setdefault(dataset, {})[method] = mean_std(group, keys)
    return out


def format_table(summary: dict) -> str:
    header = ["data", "method"] + [h for _, h, _ in TABLE]
    lines = []
    for dataset, by_method in summary.items():
        for method, stats in by_method.items():
            cells = [dataset, method]
            for key, _, fmt in TABLE:
                s = stats.get(key)
                if s is None:
                    cells.append("-")
                elif key == "nmi":
                    cells.append(f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}")
                else:
                    cells.append(fmt.format(s["mean"]))
            lines.append(cells)
    return render_table(header, lines)


def save_figure(dataset: str, methods: list[str], runs_dir: Path, out_dir: Path) -> Path | None:
    """Seed-0 cluster maps (top) and energy landscapes (bottom), one column per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib.image as mpimg

    panels = [(runs_dir / f"{dataset}_{m}_seed0", m) for m in methods]
    panels = [(d, m) for d, m in panels if (d / "clusters.png").exists()]
    if not panels:
        return None
    figure = Figure(figsize=(4 * len(panels), 8))
    FigureCanvasAgg(figure)
    for column, (run_dir, method) in enumerate(panels):
        for row, name in enumerate(("clusters.png", "energy_landscape.png")):
            axes = figure.add_subplot(2, len(panels), row * len(panels) + column + 1)
            axes.imshow(mpimg.imread(run_dir / name))
            axes.set_axis_off()
            if row == 0:
                axes.set_title(method, fontsize=12)
    figure.suptitle(f"{dataset}: seed 0", fontsize=13)
    path = out_dir / f"gedi_toy_{dataset}.png"
    figure.savefig(path, dpi=90, bbox_inches="tight")
    return path


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = None
    if args.runs_dir is None:
        temporary = tempfile.mkdtemp(prefix="gedi_toy_")
    runs_dir = Path(args.runs_dir or temporary)
    started = time.perf_counter()
    rows = []
    try:
        for dataset in args.datasets:
            for method in args.methods:
                for seed in range(args.seeds):
                    row = run_one(dataset, method, seed, args, runs_dir)
                    rows.append(row)
                    print(f"{dataset:8s} {method:7s} seed {seed}: nmi {row['nmi']:.3f}  largest "
                          f"{row['largest_cluster']:.2f}  auroc(noise) {row['ood_auroc_noise']:.2f}  "
                          f"{row['seconds']:.1f}s", flush=True)
        figures = [str(p.relative_to(REPO) if p.is_relative_to(REPO) else p)
                   for p in (save_figure(d, args.methods, runs_dir, out.parent) for d in args.datasets) if p]
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    summary = summarise(rows)
    result = {
        "benchmark": "gedi_toy",
        "settings": {"seeds": list(range(args.seeds)), "datasets": args.datasets, "methods": args.methods,
                     "epochs": args.epochs, "threads": args.threads, "device": args.device,
                     "tasks": {d: f"tasks/gedi_{d}.yaml" for d in args.datasets}},
        "summary": summary,
        "runs": rows,
        "figures": figures,
        "total_seconds": time.perf_counter() - started,
        "torch": torch.__version__,
        "machine": machine_info(args.device),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(format_table(summary))
    print(f"\nwrote {out} ({result['total_seconds']:.0f}s)")
    return result


if __name__ == "__main__":
    main()
