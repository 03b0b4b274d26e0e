"""The reasoning-shortcut table: which training modes learn the concepts, which a shortcut?

For each task (default: MNIST-EvenOdd and small-data MNIST-addition, 300 pairs = 1% of
the full protocol), each training mode and each seed, trains a run with
`nesy_gedi.train.train` (one torch thread), diagnoses it with `nesy_gedi.diagnose`, and
reports mean ± std over seeds of the label accuracy (ID and OOD), concept accuracy,
matched concept accuracy (Hungarian), concept collapse and how many seeds learned a
reasoning shortcut. Writes benchmarks/results/shortcuts.json and prints a markdown table.

    python benchmarks/shortcuts.py                                 # the full table (long)
    python benchmarks/shortcuts.py --seeds 1 --epochs 1 --modes sl \\
        --set data.train_examples=100 --set data.test_examples=200 --out /tmp/shortcuts.json

The README's table is one plan file (which tasks, modes, variants, K and seeds), one command:

    python benchmarks/shortcuts.py --plan benchmarks/shortcut_table.yaml \
        --out benchmarks/results/shortcuts_table.json

Runs live in --runs-dir (default runs/benchmarks/shortcuts/TASK/MODE/seedK). A run whose
diagnosis exists with the same configuration is reused, an interrupted one resumed, so the
table can be rebuilt or extended (more seeds, other modes) without retraining; --fresh
retrains every run. Runs whose task names a pretraining (`model.pretrain`) share one store,
<runs-dir>/pretrained: one backbone per seed, reused by every task, mode and variant.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nesy_gedi.config import TRAINING_MODES, load_config  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, same_run_config, spread  # noqa: E402
from nesy_gedi.diagnose import DIAGNOSIS, diagnose_run  # noqa: E402
from nesy_gedi.errors import NesyError  # noqa: E402
from nesy_gedi.runs import CHECKPOINT, FINAL, load_run_config  # noqa: E402
from nesy_gedi.train import train  # noqa: E402

TASKS = {
    "evenodd": REPO / "tasks" / "mnist_evenodd.yaml",
    "small": REPO / "tasks" / "mnist_addition_small.yaml",
    "restricted": REPO / "tasks" / "mnist_addition_restricted.yaml",
    "carry": REPO / "tasks" / "mnist_carry.yaml",
    "difference": REPO / "tasks" / "mnist_difference_mod10.yaml",
    "product": REPO / "tasks" / "mnist_product_mod10.yaml",
}
DEFAULT_TASKS = ("evenodd", "small")
METRICS = ("label_accuracy", "label_accuracy_ood", "concept_accuracy", "matched_concept_accuracy",
           "concept_nmi", "concept_collapse")
HEADERS = ("label acc ID", "label acc OOD", "concept acc", "matched concept acc", "concept NMI", "collapse")
NEAR_SHARE = 0.9
PLAN_KEYS = {"task", "modes", "variants", "concept_labels", "seeds", "set"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                        help=f"task names ({', '.join(TASKS)}) or task files (default: {' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--modes", nargs="+", default=list(TRAINING_MODES), choices=TRAINING_MODES,
                        metavar="MODE", help=f"training modes (default: all of {', '.join(TRAINING_MODES)})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per task and mode (default 3)")
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the task file's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run, e.g. data.train_examples=100; repeatable")
    parser.add_argument("--variant", dest="variants", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="a named set of extra overrides run beside the plain modes, e.g. "
                             "'pretrained+map:model.init=runs/backbones/seed{seed},map.epochs=20' "
                             "({seed} is the run's seed: one backbone per seed); repeatable")
    parser.add_argument("--concept-labels", nargs="+", type=int, default=[0], metavar="K",
                        help="train.concept_labels values (K labelled images per concept value; 0 = none)")
    parser.add_argument("--no-plain", action="store_true", help="run only the --variant rows")
    parser.add_argument("--plan", help="a YAML plan of the rows to run (see benchmarks/shortcut_table.yaml); "
                                       "replaces --tasks, --modes, --variant, --concept-labels and --seeds")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs trained at once, one torch thread each (default 1); runs that share a "
                             "pretraining wait for the one that writes it")
    parser.add_argument("--data-root", help="data folder (default $NESY_GEDI_DATA)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the task's train.device)")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "benchmarks" / "shortcuts"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "shortcuts.json"))
    parser.add_argument("--fresh", action="store_true", help="retrain runs even when a diagnosis exists")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def task_file(name: str) -> Path:
    if name in TASKS:
        return TASKS[name]
    path = Path(name)
    if not path.exists():
        raise NesyError(f"unknown task {name!r} (use {', '.join(TASKS)} or a task file)")
    return path


def parse_variants(items: list[str]) -> dict[str, list[str]]:
    variants = {}
    for item in items:
        name, _, overrides = item.partition(":")
        if not name or not overrides:
            raise NesyError(f"--variant {item!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        variants[name] = [o.strip() for o in overrides.split(",") if o.strip()]
    return variants


@dataclass(frozen=True)
class Job:
    task: Path
    mode: str
    variant_name: str
    variant: tuple
    concept_labels: int
    seed: int
    overrides: tuple = ()  # the plan row's own `set`


def jobs_from_args(args) -> list[Job]:
    variants = ([] if args.no_plain else [("", [])]) + list(parse_variants(args.variants).items())
    return [Job(task_file(task), mode, name, tuple(variant), k, seed)
            for task in args.tasks for mode in args.modes for name, variant in variants
            for k in args.concept_labels for seed in range(args.seeds)]


def jobs_from_plan(path: Path) -> list[Job]:
    """The runs a plan file asks for, in its order, each once. A plan is `variants` (name ->
    list of KEY=VALUE, "" is the plain mode) and `rows`, each naming a task, modes, variants,
    concept_labels (K values), seeds (a count or a list) and optional `set` overrides."""
    def fail(message: str):
        raise NesyError(f"{path}: {message}")

    try:
        plan = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        fail(f"cannot read the plan ({error})")
    if not isinstance(plan, dict) or not isinstance(plan.get("rows"), list):
        fail("expected a mapping with a list under 'rows'")
    variants = {"": []}
    for name, overrides in (plan.get("variants") or {}).items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            fail(f"variants.{name}: expected a list of KEY=VALUE strings")
        variants[str(name)] = overrides
    jobs = []
    for index, row in enumerate(plan["rows"]):
        where = f"rows[{index}]"
        if not isinstance(row, dict) or "task" not in row:
            fail(f"{where}: expected a mapping with a 'task'")
        unknown = sorted(set(row) - PLAN_KEYS)
        if unknown:
            fail(f"{where}.{unknown[0]}: unknown key (valid: {', '.join(sorted(PLAN_KEYS))})")
        modes = row.get("modes", ["sl"])
        bad = [m for m in modes if m not in TRAINING_MODES]
        if bad:
            fail(f"{where}.modes: unknown mode {bad[0]!r} (valid: {', '.join(TRAINING_MODES)})")
        names = row.get("variants", [""])
        missing = [n for n in names if (n or "") not in variants]
        if missing:
            fail(f"{where}.variants: {missing[0]!r} is not defined under 'variants'")
        seeds, ks = row.get("seeds", 3), row.get("concept_labels", [0])
        if _count(seeds) and seeds > 0:
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or not isinstance(ks, list) or not all(map(_count, [*ks, *seeds])):
            fail(f"{where}: seeds (a positive count or a list) and concept_labels (a list) must be "
                 "non-negative integers")
        task = task_file(str(row["task"]))
        for mode in modes:
            for name in names:
                for k in ks:
                    for seed in seeds:
                        jobs.append(Job(task, mode, name or "", tuple(variants[name or ""]), k, seed,
                                        tuple(row.get("set", []))))
    return list(dict.fromkeys(jobs))


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def run_config(job: Job, args):
    overrides = list(args.overrides) + list(job.overrides) + [
        o.replace("{seed}", str(job.seed)) for o in job.variant] + [
        f"train.mode={job.mode}", f"train.seed={job.seed}", "train.num_threads=1", "train.progress=false"]
    if job.concept_labels:
        overrides.append(f"train.concept_labels={job.concept_labels}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    config = load_config(job.task, overrides)
    if config.model.pretrain and not config.model.pretrain_dir:
        config = load_config(job.task, overrides + [f"model.pretrain_dir={Path(args.runs_dir) / 'pretrained'}"])
    return config


def backbone_of(run_dir: Path) -> dict | None:
    """The pretrained backbone a run started from (model.init) and its clustering figures."""
    init = load_run_config(run_dir).model.init
    final = Path(init) / FINAL if init else None
    if final is None or not final.exists():
        return None
    figures = json.loads(final.read_text())
    if "cluster_accuracy" not in figures:  # a train run, not a clustering
        return None
    return {"run": init, **{key: figures.get(key) for key in ("cluster_accuracy", "nmi", "val_cluster_accuracy")}}


def run_one(job: Job, args) -> dict:
    """Train (or reuse, or resume) one run and return its diagnosis."""
    config = run_config(job, args)
    mode, seed, variant_name, concept_labels = job.mode, job.seed, job.variant_name, job.concept_labels
    label = mode.replace(">", "") + (f"_{variant_name}" if variant_name else "") + (
        f"_K{concept_labels}" if concept_labels else "")
    run_dir = Path(args.runs_dir) / config.name / label / f"seed{seed}"
    same = same_run_config(run_dir, config)
    if same and not args.fresh and (run_dir / DIAGNOSIS).exists() and (run_dir / FINAL).exists():
        stored = json.loads((run_dir / DIAGNOSIS).read_text())
        if all(key in stored for key in ("permutation_shortcuts", "concept_map_is_permutation", "concept_nmi")):
            return stored
        # A diagnosis from an older toolkit: the trained run is reused, only re-diagnosed.
    if run_dir.exists() and (args.fresh or not same):
        shutil.rmtree(run_dir)
    resume = (run_dir / CHECKPOINT).exists() and not (run_dir / FINAL).exists()
    if (run_dir / FINAL).exists():  # finished, only the diagnosis is missing
        pass
    else:
        train(config, run_dir, resume=resume, data_root=args.data_root, device=args.device)
    return diagnose_run(run_dir, data_root=args.data_root, device=args.device, quiet=True)


def _shown(path: Path) -> str:
    path = Path(path)
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)


def summarise(runs: list) -> list:
    rows = []
    for key in dict.fromkeys((r["task"], r["mode"], r["variant"], r["concept_labels"]) for r in runs):
        group = [r for r in runs if (r["task"], r["mode"], r["variant"], r["concept_labels"]) == key]
        row = {"task": key[0], "mode": key[1], "variant": key[2], "concept_labels": key[3],
               "seeds": [r["seed"] for r in group],
               "shortcuts_in_task": group[0]["shortcuts"],
               "runs_that_learned_a_shortcut": sum(bool(r["concept_map_is_shortcut"]) for r in group),
               "runs_that_learned_the_concepts": sum(bool(r["concept_map_is_identity"]) for r in group),
               "runs_that_learned_a_permutation": sum(bool(r["concept_map_is_shortcut"])
                                                      and bool(r.get("concept_map_is_permutation")) for r in group),
               # A wrong learned map that keeps at least NEAR_SHARE of the training labels.
               "runs_on_a_near_shortcut": sum(not r["concept_map_is_identity"] and r.get("map_label_share") is not None
                                              and r["map_label_share"] >= NEAR_SHARE for r in group)}
        for metric in METRICS + ("val_label_accuracy", "naming_seconds", "map_label_share"):
            row[metric] = spread([r.get(metric) for r in group])
        row["backbone_cluster_accuracy"] = spread([(r.get("backbone") or {}).get("cluster_accuracy") for r in group])
        row["backbones"] = len({r["backbone"]["run"] for r in group if r.get("backbone")})
        rows.append(row)
    return rows


def _cell(stats: dict | None) -> str:
    if stats is None:
        return "–"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def _backbones(row: dict) -> str:
    if not row.get("backbones"):
        return "–"
    return f"{row['backbones']} ({_cell(row['backbone_cluster_accuracy'])})"


def markdown(rows: list) -> str:
    lines = ["| task | mode | K | seeds | backbones (cluster acc) | val label acc | " + " | ".join(HEADERS)
             + " | learned shortcut (of which permutations) | learned concepts |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * (len(HEADERS) + 2)]
    for row in rows:
        seeds = len(row["seeds"])
        permuted = row.get("runs_that_learned_a_permutation")
        shortcut_cell = f"{row['runs_that_learned_a_shortcut']}/{seeds}" + (f" ({permuted})" if permuted is not None else "")
        mode = row["mode"] + (f" [{row['variant']}]" if row.get("variant") else "")
        lines.append(f"| {row['task']} ({row['shortcuts_in_task']} RS) | {mode} | {row.get('concept_labels', 0)} | "
                     f"{seeds} | {_backbones(row)} | {_cell(row.get('val_label_accuracy'))} | "
                     + " | ".join(_cell(row[m]) for m in METRICS)
                     + f" | {shortcut_cell} | {row['runs_that_learned_the_concepts']}/{seeds} |")
    lines.append("")
    lines.append("Percentages, mean ± std over seeds. RS: reasoning shortcuts the task's training support allows "
                 "(shared concept map, counted exactly). \"learned shortcut\": runs whose learned concept map "
                 "(most frequent prediction per digit) is one of them; in brackets, those whose map permutes "
                 "the digits (right clusters, wrong names), which no clustering prior can rule out. Backbones: "
                 "independently pretrained backbones behind the row (one per seed), with their test cluster "
                 "accuracy.")
    return "\n".join(lines)


def label_efficiency_plot(rows: list, path: Path) -> Path | None:
    """Concept accuracy (mean ± std over seeds) against K labelled images per concept value,
    one line per task, mode and variant run at two K or more; None when every row has the same K."""
    if len({row.get("concept_labels", 0) for row in rows}) < 2:
        return None
    figure = Figure(figsize=(5.5, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key in dict.fromkeys((row["task"], row["mode"], row.get("variant", "")) for row in rows):
        line = sorted((row["concept_labels"], row["concept_accuracy"]) for row in rows
                      if (row["task"], row["mode"], row.get("variant", "")) == key and row["concept_accuracy"])
        if len(line) < 2:  # a single K is no curve; the table has it
            continue
        ks = [max(k, 0.5) for k, _ in line]  # K = 0 drawn at 0.5 on the log axis
        axes.errorbar(ks, [100 * a["mean"] for _, a in line], yerr=[100 * a["std"] for _, a in line],
                      marker="o", capsize=3, label=" ".join(filter(None, key)))
    axes.set_xscale("log")
    axes.set_xlabel("labelled images per concept value (K)")
    axes.set_ylabel("test concept accuracy, %")
    axes.axhline(95, color="0.7", linestyle=":")
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _record(done: int, job: Job, args, future, total: int) -> dict:
    """One run's row of the result file (trained here, or by a worker when `future` is given)."""
    print(f"[{done}/{total}] {job.task.stem} {job.mode} {job.variant_name} K={job.concept_labels} "
          f"seed {job.seed}", flush=True)
    run_started = time.perf_counter()
    diagnosis = future.result() if future is not None else run_one(job, args)
    final_path = Path(diagnosis["run"]) / "final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else {}
    record = {key: diagnosis.get(key) for key in
              ("task", "mode", "seed", "run", *METRICS, "concept_macro_f1",
               "mean_normalised_concept_entropy", "concept_map_is_shortcut", "concept_map_is_identity",
               "concept_map_is_permutation", "learned_concept_map", "shortcuts",
               "permutation_shortcuts", "concept_maps")}
    record["variant"], record["concept_labels"] = job.variant_name, job.concept_labels
    record["backbone"] = backbone_of(Path(diagnosis["run"]))
    record["val_label_accuracy"] = final.get("val_label_accuracy")
    record["train_seconds"] = final.get("seconds_total")
    record["epochs"] = final.get("epochs")
    record["map_label_share"] = diagnosis.get("map_label_share")
    record["nearest_shortcut"] = diagnosis.get("nearest_shortcut")
    naming = final.get("naming") or {}
    record["naming_seconds"] = naming.get("seconds")
    record["naming_labels_explained"] = naming.get("labels_explained")
    record["test_sum_accuracy"] = final.get("test_label_accuracy")
    print(f"    label ID {record['label_accuracy']:.3f}"
          + (f"  OOD {record['label_accuracy_ood']:.3f}" if record["label_accuracy_ood"] is not None else "")
          + f"  concepts {record['concept_accuracy']:.3f}"
          f"  matched {record['matched_concept_accuracy']:.3f}  collapse {record['concept_collapse']:.2f}"
          f"  ({time.perf_counter() - run_started:.0f} s)", flush=True)
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    jobs = jobs_from_plan(Path(args.plan)) if args.plan else jobs_from_args(args)
    tasks = list(dict.fromkeys(job.task for job in jobs))
    started = time.perf_counter()
    pool = (ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
            if args.workers > 1 else None)
    pending = [pool.submit(run_one, job, args) for job in jobs] if pool else None
    try:
        runs = [_record(done, job, args, pending[done - 1] if pool else None, len(jobs))
                for done, job in enumerate(jobs, start=1)]
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    rows = summarise(runs)
    result = {
        "benchmark": "shortcuts",
        "settings": {"tasks": [_shown(t) for t in tasks],
                     **({"plan": _shown(Path(args.plan).resolve()),
                         "plan_text": Path(args.plan).read_text()} if args.plan else
                        {"modes": args.modes, "variants": parse_variants(args.variants),
                         "concept_labels": args.concept_labels, "seeds": args.seeds}),
                     "epochs": args.epochs, "overrides": args.overrides, "device": args.device, "num_threads": 1,
                     "workers": args.workers},
        "seconds": round(time.perf_counter() - started, 1),
        "table": rows,
        "runs": runs,
        "markdown": markdown(rows),
        "machine": {**machine_info(args.device), "torch_threads": 1, "workers": args.workers},  # per run
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = label_efficiency_plot(rows, out.with_name(out.stem + "_label_efficiency.png"))
    if plot is not None:
        result["figure"] = plot.name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(rows))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NesyError as error:
        print(f"shortcuts benchmark: error: {error}", file=sys.stderr)
        sys.exit(2)
