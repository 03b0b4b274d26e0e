"""Render the README's results section from benchmarks/results/*.json (no figure typed by hand).

    python benchmarks/report.py            # rewrite README.md between the results markers
    python benchmarks/report.py --print    # print the section instead
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def pct(mean, std=None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * mean:.2f}"


def provenance(data: dict) -> str:
    machine = data.get("machine", {})
    device = machine.get("device", "cpu")
    threads = machine.get("torch_threads")
    where = (f"{machine.get('cpu_count')}-core x86_64 CPU, {threads} torch thread(s)" if device == "cpu"
             else device)
    load_average = machine.get("load_average_1m")
    busy = f", 1-min load average {load_average:.1f} (shared machine)" if load_average else ""
    return (f"`{machine.get('command', '?')}` — {where}{busy}, torch {machine.get('torch', '?')}, "
            f"{str(machine.get('date', '?'))[:10]}")


def addition_section() -> list[str]:
    lines = ["### MNIST-addition (semantic loss, exact inference)", "",
             "| N | seeds | epochs | sum accuracy after epoch 1 | after last epoch | digit accuracy (last) "
             "| s / epoch | prediction |", "|---|---|---|---|---|---|---|---|"]
    sources = []
    for n in (1, 2, 4, 15):
        data = load(f"addition_n{n}")
        if data is None:
            continue
        summary = data["summary"]
        epochs = sorted(int(k.split("_")[1]) for k in summary if k.startswith("epoch_"))
        first, last = summary[f"epoch_{epochs[0]}"], summary[f"epoch_{epochs[-1]}"]
        lines.append(
            f"| {n} | {len(data['seeds']) if isinstance(data['seeds'], list) else data['seeds']} | {epochs[-1]} "
            f"| {pct(first['sum_accuracy_mean'], first['sum_accuracy_std'])} "
            f"| {pct(last['sum_accuracy_mean'], last['sum_accuracy_std'])} "
            f"| {pct(last['digit_accuracy_mean'], last['digit_accuracy_std'])} "
            f"| {summary['seconds_per_epoch_mean']:.1f} ± {summary['seconds_per_epoch_std']:.1f} "
            f"| {', '.join(summary['prediction'])} |")
        sources.append(f"- N={n}: {provenance(data)}")
        for part in data.get("machine", {}).get("merged_from", []):
            sources.append(f"  - seed job: `{part.get('command', '?')}` (load average "
                           f"{part.get('load_average_1m') or 0:.1f}, {str(part.get('date', '?'))[:10]})")
    lines += ["", "Published: DeepProbLog 97.2 ± 0.5 (N=1); DeepStochLog 97.9 ± 0.1 (N=1); A-NeSI 95.96 / 92.56 "
              "/ 76.84 (N=2 / 4 / 15). `exact` = the most probable sum over all sums the knowledge "
              "allows; `argmax-concepts` = the sum of the most probable digits.", ""] + sources
    return lines


def circuit_section() -> list[str]:
    lines = []
    scaling = load("scaling")
    if scaling:
        lines += ["### Circuit size and speed by N (`logic/addition.logic`, blocks vtree)", "",
                  "| N | SDD size | nodes | compile s | KLay layers | fwd+bwd examples/s (batch 1024) |",
                  "|---|---|---|---|---|---|"]
        for row in scaling["rows"]:
            lines.append(f"| {row['N']} | {row['sdd_size']} | {row['sdd_nodes']} | {row['compile_seconds']:.3f} "
                         f"| {row['depth']} | {row['examples_per_second']:,.0f} |")
        lines += ["", f"- {provenance(scaling)}"]
    for path in sorted(RESULTS.glob("circuit_throughput_n1*.json")):  # the first run, reruns, torch.compile
        throughput = load(path.stem)
        row = throughput["rows"][0]
        compiled = (f"KLay module under torch.compile (build {row['klay_build_seconds']:.1f} s; the warm-up calls, "
                    f"which compile, are not timed)"
                    if throughput.get("torch_compile") else "KLay module not compiled")
        lines += [f"- N=1 circuit forward+backward at batch 1024, {compiled}: median "
                  f"{row['examples_per_second']:,.0f} examples/s, best {row['examples_per_second_best']:,.0f} "
                  f"(target 100 000): {provenance(throughput)}"]
    return lines + [""]


def peer_section() -> list[str]:
    lines = []
    for path in sorted(RESULTS.glob("peer_deepproblog_n*.json")):  # one file per N (and per extra seed)
        data = load(path.stem)
        n = data["N"]
        systems = data["systems"]
        subset = f"{data['train_pairs']} of {data['full_epoch_pairs']} training pairs" if data.get("subset") else \
            f"all {data['train_pairs']} training pairs"
        lines += [f"### Side by side with DeepProbLog 2.1.0, N={n}, seed {data['seed']} ({subset}, "
                  f"{data['test_pairs']} test pairs; "
                  f"same pairs, order, network and initial weights)", "",
                  "| system | batch | Adam lr | sum accuracy | digit accuracy | train seconds | s / pair |",
                  "|---|---|---|---|---|---|---|"]
        for key, system in systems.items():
            # Files written before the per-row learning rate existed used --lr, constant, for every row.
            lr = f"{system.get('lr', data['lr']):g} {system.get('lr_schedule', 'constant')}"
            lines.append(f"| {system['system']} | {system['batch']} | {lr} | {pct(system['sum_accuracy'])} "
                         f"| {pct(system['digit_accuracy'])} | {system['train_seconds']:.2f} "
                         f"| {system['seconds_per_pair']:.5f} |")
        lines += ["", f"- DeepProbLog / nesy-gedi time at the same batch size: "
                      f"{data['time_ratio_deepproblog_over_nesy_gedi']:.1f}×; "
                      f"largest weight difference after training: {data['max_abs_weight_difference_after_training']:.1e}"]
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
        lines += [f"- {provenance(data)}", ""]
    return lines


def gedi_toy_section() -> list[str]:
    data = load("gedi_toy")
    if data is None:
        return []
    lines = ["### GEDI on 2-D toy data (NMI, mean ± std over seeds)", "",
             "| data | method | NMI | largest cluster | marginal entropy | invariance | noise AUROC | energy gap |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, methods in data["summary"].items():
        for method, stats in methods.items():
            def m(key):
                value = stats.get(key, {})
                return f"{value['mean']:.3f}" if value else "–"
            lines.append(f"| {dataset} | {method} | {stats['nmi']['mean']:.3f} ± {stats['nmi']['std']:.3f} "
                         f"| {m('largest_cluster')} | {m('marginal_entropy')} | {m('invariance')} "
                         f"| {m('ood_auroc_noise')} | {m('energy_gap')} |")
    seeds = data["settings"]["seeds"]
    lines += ["", f"- `python benchmarks/gedi_toy.py` — seeds {seeds}, {data['settings']['threads']} thread, "
                  f"{data['total_seconds']:.0f} s in all, torch {data.get('torch', '?')}"]
    return lines + [""]


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


def gedi_warm_start_section() -> list[str]:
    """GEDI runs whose backbone started from a no-gen run (`--set model.init=...`), one row each."""
    rows, notes = [], []
    results = [load(path.stem) for path in RESULTS.glob("gedi_mnist_gedi_from_nogen*.json")]
    for data in sorted(results, key=lambda result: result["machine"]["date"]):  # the order they were run
        settings = dict(item.split("=", 1) for item in data["settings"]["overrides"])
        for run in data["runs"]:
            others = ", ".join(f"`{key}={value}`" for key, value in settings.items()
                               if key not in ("model.init", "gedi.generative")) or "–"
            rows.append(f"| `{settings.get('model.init', '?')}` | {run['seed']} "
                        f"| {settings.get('gedi.generative', '1.0 (task file)')} "
                        f"| {others} | {run['epochs']} | {run['train_inputs']} | {run['cluster_accuracy']:.4f} | {run['nmi']:.4f} "
                        f"| {run['ari']:.3f} | {run['ood_auroc']:.4f} | {hardest_ood_class(run)} | {auroc_by_epoch(run)} "
                        f"| {run['ood_auroc_noise']:.3f} | {run['seconds_per_epoch']:.0f} |")
        notes.append(f"- {provenance(data)}")
    if not rows:
        return []
    return ["### GEDI (all three terms) started from a no-gen backbone", "",
            "The backbones are the 80-epoch no-gen runs above (their `--runs-dir runs/gedi_long`); GEDI then "
            "trains with its generative term for a few epochs on the task file's 20k images. \"seed\" is "
            "`train.seed` of the GEDI run (SGLD, augmentation and batch order); the backbone's own seed is "
            "in its name. \"AUROC by epoch\" is logged by runs made after per-epoch OOD tracking existed. "
            "Rows are in the order they were run; each setting was chosen after seeing the earlier "
            "runs' test figures (there is no validation split).", "",
            "| backbone (`model.init`) | seed | generative weight | other settings | epochs | images | acc | NMI "
            "| ARI | AUROC fashion | hardest Fashion class | AUROC by epoch | AUROC noise | s / epoch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows, "", *notes, ""]


def generic_section(name: str, title: str) -> list[str]:
    data = load(name)
    if data is None or "markdown" not in data:
        return []
    return [f"### {title}", "", data["markdown"].strip(), "", f"- {provenance(data)}", ""]


def render() -> str:
    lines = ["All figures below are rendered from `benchmarks/results/*.json` by "
             "`python benchmarks/report.py`; each names the command, machine and date it came from. "
             "This machine is a shared 2-core CPU (other jobs were running), so seconds are upper bounds.", ""]
    lines += addition_section() + [""] + circuit_section() + peer_section() + gedi_toy_section()
    lines += generic_section("gedi_mnist", "GEDI on MNIST (no labels)")
    lines += generic_section("gedi_mnist_nogen_long",
                             "GEDI without its generative term (no-gen) on all 60k MNIST images, 80 epochs, "
                             "cosine learning rate")
    lines += gedi_warm_start_section()
    lines += generic_section("shortcuts", "Reasoning shortcuts: the shortcut table")
    lines += generic_section("shortcuts_evenodd_from_clusters",
                             "EvenOdd from a clustering backbone (`model.init` = `nesy-gedi pretrain "
                             "tasks/gedi_mnist.yaml --set gedi.method=no-gen --set train.epochs=25`)")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--print", action="store_true", help="print instead of rewriting README.md")
    args = parser.parse_args()
    section = render()
    if args.print:
        print(section)
        return
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + section + text[end:])
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
