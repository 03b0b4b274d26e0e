"""Render the results from the stored JSON (no figure typed by hand).

    python benchmarks/report.py            # rewrite README.md's results block and docs/results.md
    python benchmarks/report.py --check    # exit 1, naming the file, if either is not up to date
    python benchmarks/report.py --print    # print both instead

The prose lives in templates, the figures in benchmarks/results/*.json: this script fills the
`$name` placeholders of docs/templates/readme_results.md.in (the README, between
`<!-- results:begin -->` and `<!-- results:end -->`) and docs/templates/results.md.in (all of
docs/results.md) with tables computed from the results. Published figures shown beside ours,
with their sources, are in benchmarks/published.yaml.
"""
from __future__ import annotations

import argparse
import json
import statistics
import string
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, SWEEPS  # noqa: E402
from result_files import (ENGINE_REWRITE, RENAMED, code, count, date_of, hardware, hardware_of,  # noqa: E402
                          load, machine_of, marks, missing, pct, portable, provenance, spread, stat, table)

README = ROOT / "README.md"
NOTEBOOK = ROOT / "docs" / "results.md"
TEMPLATES = ROOT / "docs" / "templates"
README_TEMPLATE = TEMPLATES / "readme_results.md.in"
NOTEBOOK_TEMPLATE = TEMPLATES / "results.md.in"
PUBLISHED = ROOT / "benchmarks" / "published.yaml"
MARKERS = ("<!-- results:begin -->", "<!-- results:end -->")

SUPERVISED = "supervised (all digit labels)"  # the long-addition ceiling rows

# GEDI on MNIST, second stage, the final recipe: (backbone seed, GEDI train.seed) of each run.
STAGE2_RUNS = [(1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]

CLAIM_HEADER = ["task", "metric", "published (source)", "ours"]


# ------------------------------------------------------------------ README table (a): addition against peers

def published() -> dict:
    return yaml.safe_load(PUBLISHED.read_text())


def peers(entries: list[dict]) -> str:
    """"80.8 ± 1.1 in 42 min (DeepProofLog); time-out (Scallop)" from published.yaml entries."""
    return "; ".join(f"{entry['accuracy']}" + (f" in {entry['minutes']} min" if entry.get("minutes") else "")
                     + f" ({entry['system']})" for entry in entries) or "—"


def addition_rows(sources: dict) -> tuple[list[list[str]], list[dict]]:
    rows, datas = [], []
    for n in (1, 2, 4, 15):
        data = load(f"addition_n{n}")
        if data is None:
            continue
        summary = data["summary"]
        last = max(int(key.split("_")[1]) for key in summary if key.startswith("epoch_"))
        final = summary[f"epoch_{last}"]
        rows.append([f"MNIST-addition N={n}, {last} epochs", "sum accuracy, %",
                     peers(sources["addition"].get(n, [])),
                     f"{pct(final['sum_accuracy_mean'], final['sum_accuracy_std'])} ({count(data['seeds'])} seeds)"
                     + marks(data, chosen=n == 15)])
        datas.append(data)
    return rows, datas


def n15_fresh_seeds() -> str:
    """Sum accuracy of the N=15 seeds whose test figures chose nothing (seed 0's did)."""
    data = load("addition_n15")
    fresh = [run["epochs"][-1]["sum_accuracy"] for run in (data or {}).get("runs", []) if run["seed"] != 0]
    return f"{100 * statistics.fmean(fresh):.2f}" if fresh else "–"


def peer_row() -> tuple[list[list[str]], list[dict]]:
    """One row: full N=1 epochs beside DeepProbLog, each system at its own settings, per seed."""
    datas = [data for data in (load("peer_deepproblog_n1"), load("peer_deepproblog_n1_seed1")) if data]
    if not datas:
        return [], []
    theirs, ours = [], []
    for data in datas:
        systems, batches = data["systems"], data["default_batches"]
        own = systems.get(f"nesy_gedi_batch{batches['nesy_gedi']}", systems["nesy_gedi"])
        theirs.append(f"{pct(systems['deepproblog']['sum_accuracy'], digits=1)} in "
                      f"{systems['deepproblog']['train_seconds']:.0f} s")
        ours.append(f"{pct(own['sum_accuracy'], digits=1)} in {own['train_seconds']:.0f} s "
                    f"({data['time_ratio_each_at_its_default_batch']:.1f}× faster)")
    seeds = ", ".join(str(data["seed"]) for data in datas)
    return ([[f"MNIST-addition N=1, one epoch, seeds {seeds}, same pairs and network", "sum accuracy, %; "
              "training time", "; ".join(theirs) + " (DeepProbLog 2.1.0, run here)",
              "; ".join(ours) + marks(datas[0], chosen=True)]], datas)


def long_addition_rows(data: dict | None, sources: dict) -> list[list[str]]:
    """Rows of benchmarks/results/long_addition.json: one per N and method, the supervised
    ceiling of the same N in the method's cell (alone in a row when it is all there is)."""
    if data is None:
        return []
    by_n: dict[int, list[dict]] = {}
    for row in data["rows"]:
        by_n.setdefault(int(row["N"]), []).append(row)
    rows = []
    for n in sorted(by_n):
        ceiling = next((row for row in by_n[n] if row["method"] == SUPERVISED), None)
        for row in [row for row in by_n[n] if row["method"] != SUPERVISED] or [ceiling]:
            seeds = count(row["seeds"])
            backbone = row.get("backbone_minutes")
            minutes = f"{row['minutes']['mean']:.1f} min" + (
                f" + {backbone['mean']:.0f} min label-free backbone" if backbone else "")
            ours = (f"{stat(row['sum_accuracy'])} ({seeds} seed{'s' if seeds != 1 else ''}, {row['epochs']} epochs, "
                    f"{minutes}; digits {stat(row['digit_accuracy'], digits=2)}")
            expected = row.get("expected_sum_accuracy")
            if expected:
                ours += (f"; expected from its digits {100 * expected['mean']:.1f} "
                         f"[{100 * expected['low']:.1f}, {100 * expected['high']:.1f}]")
            if ceiling is not None and row is not ceiling:
                ours += f"; all digits labelled: {stat(ceiling['sum_accuracy'])}"
            rows.append([f"MNIST-addition N={n}, {row['method']}",
                         f"sum accuracy, % ({row['test_sums']} test sums)",
                         peers(sources["long_addition"].get(n, [])), ours + ")" + marks(data)])
    return rows


def step_cost_rows(data: dict | None) -> list[list[str]]:
    """The README row of benchmarks/results/long_addition_steps.json: a semantic-loss step against a
    supervised step on the same images, with the circuit as a tree of blocks and, for contrast, a chain."""
    if data is None:
        return []
    rows = {(row["N"], row["vtree"]): row for row in data["rows"]}
    cells = [f"N={n}: {rows[n, 'block-tree']['ratio_semantic_to_supervised']:.2f}× "
             f"({100 * rows[n, 'block-tree']['circuit_share']:.0f} % of the step in the circuit, "
             f"{rows[n, 'block-tree']['layers']} layers)" for n in (100, 1000) if (n, "block-tree") in rows]
    if (1000, "blocks") in rows:
        chain = rows[1000, "blocks"]
        cells.append(f"chained blocks at N=1000: {chain['ratio_semantic_to_supervised']:.2f}×, {chain['layers']} layers")
    return [["MNIST-addition, long numbers: the compiled layer's cost", "semantic-loss step / supervised step "
             "(same images and network)", "—", "; ".join(cells) + marks(data)]] if cells else []


def addition_values() -> dict:
    sources = published()
    rows, datas = addition_rows(sources)
    peer, peer_datas = peer_row()
    long, steps = load("long_addition"), load("long_addition_steps")
    rows += peer + long_addition_rows(long, sources) + step_cost_rows(steps)
    return {"addition_table": table(CLAIM_HEADER, rows), "n15_fresh_seeds": n15_fresh_seeds(),
            "addition_hardware": hardware_of(*datas, *peer_datas, long, steps),
            "long_addition_command": (f"; long addition: {code(portable(long['command']))}" if long else "")
            + (f"; step costs: {code(portable(steps['command']))}" if steps else ""),
            "long_addition_note": f" {sources['long_addition_note'].strip()}" if long else ""}


# ------------------------------------------------------------------ README table (b): GEDI clustering and OOD

def gedi_values() -> dict:
    rows, datas = [], []
    for dataset, name in (("moons", "gedi_toy_moons"), ("circles", "gedi_toy")):
        data = load(name) or load("gedi_toy")
        methods = (data or {}).get("summary", {}).get(dataset)
        if not methods:
            continue
        where = "two moons" if dataset == "moons" else "concentric circles"
        seeds = count(data["settings"]["seeds"])
        rows.append([f"{where}, GEDI", "NMI (test)", "—",
                     f"{stat(methods['gedi']['nmi'], 1, 3)} ({seeds} seeds)" + marks(data)])
        if dataset == "moons":
            ablations = [f"{method} {stat(stats['nmi'], 1, 3)}, noise AUROC {stats['ood_auroc_noise']['mean']:.2f}"
                         for method, stats in methods.items() if method != "gedi"]
            rows.append([f"{where}, ablations", "NMI; noise AUROC (test)", "—", "; ".join(ablations) + marks(data)])
        datas.append(data)
    metric = "cluster accuracy / NMI / Fashion-MNIST AUROC (test)"
    stage1 = load("gedi_mnist_stage1_nogen")
    if stage1:
        summary = stage1["summary"]["no-gen"]
        rows.append(["MNIST, no labels, stage 1: no-gen, 80 epochs", metric, "—",
                     f"{stat(summary['cluster_accuracy'], 1, 3)} / {stat(summary['nmi'], 1, 3)} / "
                     f"{stat(summary['ood_auroc'], 1, 3)} ({summary['runs']} seeds)" + marks(stage1)])
        datas.append(stage1)
    stage2 = [load(f"gedi_mnist_stage2_backbone{b}_seed{k}") for b, k in STAGE2_RUNS]
    runs = [data["runs"][0] for data in stage2 if data]
    if runs:
        rows.append(["MNIST, no labels, stage 2: all three GEDI terms, 2 epochs, from the two best stage-1 "
                     "backbones", metric, "—",
                     f"{spread([r['cluster_accuracy'] for r in runs])} / {spread([r['nmi'] for r in runs], 3)} / "
                     f"{spread([r['ood_auroc'] for r in runs])} ({len(runs)} runs)"
                     + marks(next(data for data in stage2 if data), chosen=True)])
        datas.append(next(data for data in stage2 if data))
    for row, data in (sampler_row(), one_stage_row()):
        if row:
            rows.append(row)
            datas.append(data)
    return {"gedi_table": table(CLAIM_HEADER, rows), "gedi_hardware": hardware_of(*datas)}


def clustering_figures(stats: dict) -> str:
    """cluster accuracy / NMI / Fashion AUROC of one method's summary in a gedi_mnist result."""
    return (f"{stat(stats['cluster_accuracy'], 1, 3)} / {stat(stats['nmi'], 1, 3)} / "
            f"{stat(stats['ood_auroc'], 1, 3)}")


def sampler_row() -> tuple[list | None, dict | None]:
    """Stage 2 of tasks/gedi_mnist_two_stage.yaml with JEM's sampler and with the cheap one."""
    default, cheap = load("gedi_stage2_default"), load("gedi_stage2_cheap")
    if not (default and cheap):
        return None, None
    a, b = default["summary"]["gedi"], cheap["summary"]["gedi"]
    return (["MNIST, stage 2 from each seed's no-gen backbone: SGLD as JEM (40 steps, whole batch) vs cheap "
             "(¼ of the batch, 5-step chains, 20 steps every 4th)",
             "cluster accuracy / NMI / Fashion-MNIST AUROC (test); s per epoch", "—",
             f"JEM's {clustering_figures(a)}, {a['seconds_per_epoch']['mean']:.0f} s; cheap {clustering_figures(b)}, "
             f"{b['seconds_per_epoch']['mean']:.0f} s ({a['runs']} backbones)"], cheap)


def one_stage_row() -> tuple[list | None, dict | None]:
    """GEDI and no-gen from random initialisation at equal epochs."""
    data = load("gedi_one_stage")
    if not data:
        return None, None
    summary, settings = data["summary"], data["settings"]
    figures = "; ".join(f"{method} {clustering_figures(stats)}, {stats['seconds_per_epoch']['mean']:.0f} s/epoch"
                        for method, stats in summary.items())
    return ([f"MNIST, one stage from random initialisation, {settings['epochs']} epochs on "
             f"{settings['train_images'] // 1000}k images", "cluster accuracy / NMI / Fashion-MNIST AUROC (test)", "—",
             f"{figures} ({count(settings['seeds'])} seeds)"], data)


# ------------------------------------------------------------------ README table (c): shortcuts and naming

TASK_NAMES = {"mnist_evenodd": "MNIST-EvenOdd (35 shortcuts, 1 a permutation)",
              "mnist_carry": "MNIST-Carry (345 shortcuts, all merge digits)",
              "mnist_addition_small_from_gedi": "small-data MNIST-addition (100 pairs)"}
VARIANT_NAMES = {"": "`sl`", "pretrained+search": "no-gen backbone + `map.search`",
                 "scratch": "`sl` from scratch", "search": "its own no-gen pretraining + `map.search`"}


def table_entry(data: dict, task: str, mode: str, variant: str = "", k: int = 0) -> dict | None:
    for entry in data.get("table", []):
        if (entry["task"], entry["mode"], entry.get("variant", ""), entry.get("concept_labels", 0)) == \
                (task, mode, variant, k):
            return entry
    return None


def shortcut_runs(entry: dict) -> str:
    permutations = entry.get("runs_that_learned_a_permutation") or 0
    return (f"shortcut in {entry['runs_that_learned_a_shortcut']}/{len(entry['seeds'])} runs"
            + (f" ({permutations} a permutation)" if permutations else ""))


def shortcut_values() -> dict:
    data = load("shortcuts_table") or {}
    rows = []
    triple = "concept acc / ID label acc / OOD label acc, %"
    for task, mode, variant, k in (("mnist_evenodd", "sl", "", 1), ("mnist_evenodd", "sl", "pretrained+search", 0),
                                   ("mnist_evenodd", "sl", "pretrained+search", 1),
                                   ("mnist_evenodd", "sl+concepts", "", 0), ("mnist_carry", "sl", "", 0),
                                   ("mnist_carry", "sl", "pretrained+search", 0)):
        entry = table_entry(data, task, mode, variant, k)
        if entry is not None:
            how = "`sl+concepts` (10 % of the examples concept-labelled)" if mode == "sl+concepts" \
                else f"{VARIANT_NAMES[variant]}, K = {k}"
            rows.append([f"{TASK_NAMES[task]}, {how}", triple, "—",
                         f"{stat(entry['concept_accuracy'])} / {stat(entry['label_accuracy'])} / "
                         f"{stat(entry.get('label_accuracy_ood'))}; {shortcut_runs(entry)}" + marks(data)])
    for variant in ("scratch", "search"):
        entry = table_entry(data, "mnist_addition_small_from_gedi", "sl", variant, 0)
        if entry is not None:
            rows.append([f"{TASK_NAMES['mnist_addition_small_from_gedi']}, {VARIANT_NAMES[variant]}",
                         "digit accuracy, %", "—",
                         f"{stat(entry['concept_accuracy'])} ({len(entry['seeds'])} seeds)" + marks(data)])
    naming = load("naming_table") or {}
    by_task = {}
    for entry in naming.get("table", []):
        if entry["task"] not in ("mnist_addition_n2", "mnist_addition_n4"):
            by_task.setdefault(entry["task"], {})[entry["concept_labels"]] = entry
    for task, entries in by_task.items():
        ks = sorted(entries)
        concepts = " / ".join(f"{stat(entries[k]['concept_accuracy'])} "
                              f"({100 * min(entries[k]['concept_accuracy']['values']):.1f})" for k in ks)
        near = sum(entries[k].get("runs_on_a_near_shortcut", 0) for k in ks)
        runs = sum(len(entries[k]["seeds"]) for k in ks)
        rows.append([f"`tasks/{task}.yaml`, no-gen backbone + `map.search`",
                     " / ".join(f"concept acc K = {k}" for k in ks) + f" (lowest seed) / label acc K = {ks[0]}, %",
                     "—",
                     f"{concepts} / {stat(entries[ks[0]]['label_accuracy'])}; "
                     f"near or exact shortcut in {near}/{runs} runs" + marks(naming)])
    backbone = table_entry(data, "mnist_evenodd", "sl", "pretrained+search", 1) or {}
    naming_backbone = (naming.get("table") or [{}])[0]
    return {"shortcut_table": table(CLAIM_HEADER, rows),
            "shortcut_hardware": hardware_of(data or None, naming or None),
            "shortcut_backbones": stat(backbone.get("backbone_cluster_accuracy"), 1, 3),
            "naming_backbones": stat(naming_backbone.get("backbone_cluster_accuracy"), 1, 3)}


# ------------------------------------------------------------------ docs/results.md: every table

def notebook_addition() -> dict:
    rows, sources = [], []
    for n in (1, 2, 4, 15):
        data = load(f"addition_n{n}")
        if data is None:
            continue
        summary = data["summary"]
        epochs = sorted(int(k.split("_")[1]) for k in summary if k.startswith("epoch_"))
        first, last = summary[f"epoch_{epochs[0]}"], summary[f"epoch_{epochs[-1]}"]
        rows.append([str(n), str(count(data["seeds"])), str(epochs[-1]),
                     pct(first["sum_accuracy_mean"], first["sum_accuracy_std"]),
                     pct(last["sum_accuracy_mean"], last["sum_accuracy_std"]),
                     pct(last["digit_accuracy_mean"], last["digit_accuracy_std"]),
                     f"{summary['seconds_per_epoch_mean']:.1f} ± {summary['seconds_per_epoch_std']:.1f}",
                     ", ".join(summary["prediction"])])
        sources.append(f"- N={n}: {provenance(data, RESULTS / f'addition_n{n}.json')}")
        for part in data.get("machine", {}).get("merged_from", []):
            sources.append(f"  - seed job: `{portable(part.get('command', '?'))}` (load average "
                           f"{part.get('load_average_1m') or 0:.1f}, {str(part.get('date', '?'))[:10]})")
    header = ["N", "seeds", "epochs", "sum accuracy after epoch 1", "after last epoch", "digit accuracy (last)",
              "s / epoch", "prediction"]
    return {"addition_full": table(header, rows) if rows else missing("addition_n1"),
            "addition_sources": "\n".join(sources)}


def notebook_long_addition() -> str:
    data = load("long_addition")
    if data is None:
        return missing("long_addition")
    rows = [[str(row["N"]), row["method"], str(count(row["seeds"])), str(row["epochs"]), stat(row["sum_accuracy"]),
             (f"{100 * row['expected_sum_accuracy']['mean']:.1f} [{100 * row['expected_sum_accuracy']['low']:.1f}, "
              f"{100 * row['expected_sum_accuracy']['high']:.1f}]") if row.get("expected_sum_accuracy") else "–",
             stat(row["digit_accuracy"], digits=2), f"{row['minutes']['mean']:.1f} ± {row['minutes']['std']:.1f}",
             str(row["threads"]), str(row["test_sums"])] for row in data["rows"]]
    header = ["N", "method", "seeds", "epochs", "sum accuracy", "expected from digits [95 %]", "digit accuracy",
              "minutes", "threads", "test sums"]
    return table(header, rows) + f"\n\n- {provenance(data, RESULTS / 'long_addition.json')}"


def notebook_step_costs() -> str:
    data = load("long_addition_steps")
    if data is None:
        return ""
    header = ["N", "vtree", "KLay layers", "SDD size", "images / step", "semantic-loss step, s", "supervised step, s",
              "ratio", "circuit share", "peak memory, MiB"]
    rows = [[str(r["N"]), r["vtree"], str(r["layers"]), f"{r['sdd_size']:,}", str(r["images"]),
             f"{r['semantic_step_seconds']:.3f}", f"{r['supervised_step_seconds']:.3f}",
             f"{r['ratio_semantic_to_supervised']:.2f}", f"{100 * r['circuit_share']:.1f} %",
             f"{r['peak_memory_mib']:.0f}"] for r in data["rows"]]
    return ("\n\nThe compiled layer's cost per step (medians of alternating repetitions in one process; the peak "
            "memory is the process's so far, rows in increasing N):\n\n" + table(header, rows)
            + f"\n\n- {provenance(data, RESULTS / 'long_addition_steps.json')}")


def notebook_circuit() -> str:
    lines = []
    scaling = load("scaling")
    if scaling:
        lines += [table(["N", "SDD size", "nodes", "compile s", "KLay layers", "fwd+bwd examples/s (batch 1024)"],
                        [[str(row["N"]), str(row["sdd_size"]), str(row["sdd_nodes"]), f"{row['compile_seconds']:.3f}",
                          str(row["depth"]), f"{row['examples_per_second']:,.0f}"] for row in scaling["rows"]]),
                  "", f"- {provenance(scaling, RESULTS / 'scaling.json')}"]
    for path in (SWEEPS / "circuit_throughput_n1_first_run.json", RESULTS / "circuit_throughput_n1_plain.json",
                 RESULTS / "circuit_throughput_n1_compiled.json"):  # in the order they ran
        if not path.exists():
            continue
        throughput = json.loads(path.read_text())
        row = throughput["rows"][0]
        compiled = (f"KLay module under torch.compile (build {row['klay_build_seconds']:.1f} s; the warm-up calls, "
                    f"which compile, are not timed)"
                    if throughput.get("torch_compile") else "KLay module not compiled")
        lines += [f"- N=1 circuit forward+backward at batch 1024, {compiled}: median "
                  f"{row['examples_per_second']:,.0f} examples/s, best {row['examples_per_second_best']:,.0f} "
                  f"(target 100 000): {provenance(throughput, path)}"]
    return ("\n".join(lines) or missing("scaling")) + notebook_step_costs()


def notebook_peer() -> str:
    lines = []
    for name in ("peer_deepproblog_n1", "peer_deepproblog_n1_seed1", "peer_deepproblog_n2"):
        data = load(name)
        if data is None:
            continue
        systems = data["systems"]
        subset = f"{data['train_pairs']} of {data['full_epoch_pairs']} training pairs" if data.get("subset") else \
            f"all {data['train_pairs']} training pairs"
        rows = [[system["system"], str(system["batch"]),
                 # Files written before the per-row learning rate existed used --lr, constant, for every row.
                 f"{system.get('lr', data['lr']):g} {system.get('lr_schedule', 'constant')}",
                 pct(system["sum_accuracy"]), pct(system["digit_accuracy"]), f"{system['train_seconds']:.2f}",
                 f"{system['seconds_per_pair']:.5f}"] for system in systems.values()]
        lines += [f"#### N={data['N']}, seed {data['seed']} ({subset}, {data['test_pairs']} test pairs)", "",
                  table(["system", "batch", "Adam lr", "sum accuracy", "digit accuracy", "train seconds",
                         "s / pair"], rows), "",
                  f"- DeepProbLog / nesy-gedi time at the same batch size: "
                  f"{data['time_ratio_deepproblog_over_nesy_gedi']:.1f}×; largest weight difference after "
                  f"training: {data['max_abs_weight_difference_after_training']:.1e}"]
        if data.get("time_ratio_each_at_its_default_batch") is not None:
            batches = data["default_batches"]
            own = systems.get(f"nesy_gedi_batch{batches['nesy_gedi']}", systems["nesy_gedi"])
            lines.append(f"- Each at its own settings (DeepProbLog's example: batch {batches['deepproblog']}; this "
                         f"toolkit: batch {batches['nesy_gedi']}, lr {own.get('lr', data['lr']):g} "
                         f"{own.get('lr_schedule', 'constant')}): "
                         f"{data['time_ratio_each_at_its_default_batch']:.1f}× "
                         + ("on this subset of an epoch" if data.get("subset") else "per epoch")
                         + f"; sum accuracy {pct(systems['deepproblog']['sum_accuracy'])} (DeepProbLog) vs "
                           f"{pct(own['sum_accuracy'])}")
        lines += [f"- {provenance(data, RESULTS / f'{name}.json')}", ""]
    return "\n".join(lines).rstrip() or missing("peer_deepproblog_n1")


def notebook_gedi_toy(name: str) -> str:
    data = load(name)
    if data is None:
        return missing(name)
    rows = []
    for dataset, methods in data["summary"].items():
        for method, stats in methods.items():
            def m(key):
                value = stats.get(key, {})
                return f"{value['mean']:.3f}" if value else "–"
            rows.append([dataset, method, stat(stats["nmi"], 1, 3), m("largest_cluster"), m("marginal_entropy"),
                         m("invariance"), m("ood_auroc_noise"), m("energy_gap")])
    when = provenance(data, RESULTS / f"{name}.json") if machine_of(data) else (
        f"`python benchmarks/gedi_toy.py` — {hardware(data)}, torch {data.get('torch', '?')}, no date recorded")
    return (table(["data", "method", "NMI", "largest cluster", "marginal entropy", "invariance", "noise AUROC",
                   "energy gap"], rows)
            + f"\n\n- seeds {data['settings']['seeds']}, {data['total_seconds']:.0f} s in all: {when}")


def hardest_ood_class(run: dict) -> str:
    """The OOD class with the lowest AUROC against the test set, e.g. "Trouser 0.912"."""
    by_class = {name: auroc for name, auroc in (run.get("ood_auroc_by_class") or {}).items() if auroc is not None}
    if not by_class:
        return "–"
    name = min(by_class, key=by_class.get)
    return f"{name} {by_class[name]:.3f}"


def auroc_by_epoch(run: dict) -> str:
    """The OOD AUROC of each evaluation epoch ("–" for runs logged before it was tracked)."""
    values = [point["ood_auroc"] for point in run.get("curve", []) if point.get("ood_auroc") is not None]
    return " → ".join(f"{value:.3f}" for value in values) if values else "–"


def notebook_generic(name: str, folder: Path | None = None) -> str:
    """A result's own markdown table and the line saying where it came from."""
    path = (folder or RESULTS) / f"{name}.json"
    data = load(name, folder)
    if data is None or "markdown" not in data:
        return missing(name)
    return f"{data['markdown'].strip()}\n\n- {provenance(data, path)}"


def notebook_gedi_warm_start() -> str:
    """Every GEDI run whose backbone started from a stage-1 no-gen run, one row each, in run order."""
    paths = sorted(RESULTS.glob("gedi_mnist_stage2_*.json")) + sorted(SWEEPS.glob("gedi_mnist_gedi_from_nogen*.json"))
    results = [(path, json.loads(path.read_text())) for path in paths]
    rows, notes = [], []
    for path, data in sorted(results, key=lambda item: item[1]["machine"]["date"]):
        settings = dict(item.split("=", 1) for item in data["settings"]["overrides"])
        for run in data["runs"]:
            others = ", ".join(f"`{key}={value}`" for key, value in settings.items()
                               if key not in ("model.init", "gedi.generative")) or "–"
            rows.append([f"`{settings.get('model.init', '?')}`", str(run["seed"]),
                         settings.get("gedi.generative", "1.0 (task file)"), others, str(run["epochs"]),
                         str(run["train_inputs"]), f"{run['cluster_accuracy']:.4f}", f"{run['nmi']:.4f}",
                         f"{run['ari']:.3f}", f"{run['ood_auroc']:.4f}", hardest_ood_class(run), auroc_by_epoch(run),
                         f"{run['ood_auroc_noise']:.3f}", f"{run['seconds_per_epoch']:.0f}",
                         f"`{path.relative_to(RESULTS)}`"])
        notes.append(f"- {provenance(data, path)}")
    if not rows:
        return missing("gedi_mnist_stage2_backbone1_seed0")
    header = ["backbone (`model.init`)", "seed", "generative weight", "other settings", "epochs", "images", "acc",
              "NMI", "ARI", "AUROC fashion", "hardest Fashion class", "AUROC by epoch", "AUROC noise", "s / epoch",
              "file"]
    return table(header, rows) + "\n\n" + "\n".join(notes)


def notebook_small_from_pretraining() -> str:
    data = load("small_from_pretraining")
    if data is None:
        return missing("small_from_pretraining")
    clusters = " / ".join(f"{b['cluster_accuracy']:.3f}" for b in data["backbones"])
    rows = [[entry["variant"], str(entry["seeds"]), stat(entry["test_concept_accuracy"])] for entry in data["table"]]
    # Its recorded command is a shell loop, not one command; the template names the command.
    return (table(["variant", "seeds", "test concept accuracy, %"], rows) + f"\n\n- backbones' cluster accuracy "
            f"{clusters}; {hardware(data)}, torch {machine_of(data).get('torch', '?')}, {date_of(data)}")


def notebook_renamed() -> str:
    return table(["written as", "now"], [[f"`{old}`", f"`benchmarks/results/{new}`"] for old, new in RENAMED.items()])


def figure(name: str, caption: str) -> str:
    path = RESULTS / name
    return f"![{caption}](../{path.relative_to(ROOT)})" if path.exists() else ""


def notebook_values() -> dict:
    values = {"engine_rewrite": ENGINE_REWRITE, "long_addition_full": notebook_long_addition(),
              "circuit": notebook_circuit(), "peers": notebook_peer(),
              "gedi_toy": notebook_gedi_toy("gedi_toy"), "gedi_toy_moons": notebook_gedi_toy("gedi_toy_moons"),
              "gedi_scratch": notebook_generic("gedi_mnist"),
              "gedi_stage1": notebook_generic("gedi_mnist_stage1_nogen"),
              "gedi_warm_start": notebook_gedi_warm_start(),
              "gedi_sampler_default": notebook_generic("gedi_stage2_default"),
              "gedi_sampler_cheap": notebook_generic("gedi_stage2_cheap"),
              "gedi_one_stage": notebook_generic("gedi_one_stage"),
              "gedi_backbone_table": notebook_generic("gedi_backbone_table"),
              "sl_gedi_table": notebook_generic("sl_gedi_table"),
              "shortcuts_table": notebook_generic("shortcuts_table"),
              "shortcuts_table_figure": figure("shortcuts_table_label_efficiency.png",
                                               "Concept accuracy against K labelled images per digit"),
              "early_evenodd_sl": notebook_generic("shortcuts_evenodd_sl"),
              "early_shortcuts": notebook_generic("shortcuts"),
              "evenodd_from_clusters": notebook_generic("shortcuts_evenodd_from_clusters"),
              "probe": notebook_generic("permuted_clusters"),
              "small_from_pretraining": notebook_small_from_pretraining(),
              "small100_from_nogen": notebook_generic("shortcuts_small100_from_nogen"),
              "evenodd_labels": notebook_generic("shortcuts_evenodd_concept_labels"),
              "evenodd_labels_figure": figure("shortcuts_evenodd_concept_labels_label_efficiency.png",
                                              "EvenOdd: concept accuracy against K labelled images per digit"),
              "naming_table": notebook_generic("naming_table"), "naming_speed": notebook_generic("naming_speed"),
              "renamed": notebook_renamed()}
    return {**values, **notebook_addition()}


# ------------------------------------------------------------------ writing

def fill(template: Path, values: dict) -> str:
    """The template with every `$name` replaced; a placeholder without a value exits naming it."""
    shown = template.relative_to(ROOT) if template.is_relative_to(ROOT) else template
    try:
        return string.Template(template.read_text()).substitute(values)
    except KeyError as error:
        raise SystemExit(f"{shown}: no value for the placeholder ${error.args[0]}") from None
    except ValueError as error:
        raise SystemExit(f"{shown}: {error} (write a literal dollar as $$)") from None


def render_readme_block() -> str:
    values = {"engine_rewrite": ENGINE_REWRITE, **addition_values(), **gedi_values(), **shortcut_values()}
    return fill(README_TEMPLATE, values).strip() + "\n"


def render_notebook() -> str:
    return fill(NOTEBOOK_TEMPLATE, notebook_values()).rstrip() + "\n"


def with_block(text: str, block: str, path: Path = README) -> str:
    """`text` with what lies between the README's results markers replaced by `block`."""
    begin, end = MARKERS
    if begin not in text or end not in text:
        raise SystemExit(f"{path.relative_to(ROOT)}: the markers {begin} and {end} are missing")
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + block + text[stop:]


def rendered() -> dict[Path, str]:
    """The whole text each generated file should have."""
    return {README: with_block(README.read_text(), render_readme_block()), NOTEBOOK: render_notebook()}


def stale(files: dict[Path, str]) -> list[Path]:
    return [path for path, text in files.items() if not path.exists() or path.read_text() != text]


def unindexed_sweeps() -> list[str]:
    """Files in benchmarks/results/sweeps/ that its INDEX.md does not list."""
    index = SWEEPS / "INDEX.md"
    listed = index.read_text() if index.exists() else ""
    return sorted(path.name for path in SWEEPS.iterdir()
                  if path.is_file() and path.name != "INDEX.md" and f"`{path.name}`" not in listed) \
        if SWEEPS.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--print", action="store_true", help="print instead of rewriting README.md and docs/results.md")
    group.add_argument("--check", action="store_true", help="exit 1 if README.md or docs/results.md is not up to date")
    args = parser.parse_args(argv)
    files = rendered()
    for name in unindexed_sweeps():
        print(f"warning: benchmarks/results/sweeps/{name} is not listed in sweeps/INDEX.md", file=sys.stderr)
    if args.check:
        for path in stale(files):
            print(f"{path.relative_to(ROOT)} is not up to date: run python benchmarks/report.py", file=sys.stderr)
        return 1 if stale(files) else 0
    for path, text in files.items():
        if args.print:
            print(f"=== {path.relative_to(ROOT)}\n{text}")
        elif path.read_text() != text if path.exists() else True:
            path.write_text(text)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
