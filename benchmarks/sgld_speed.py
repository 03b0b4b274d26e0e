"""Cost of a GEDI training step: against its floor (S SGLD passes plus the loss pass) and, for
each cheaper sampler setting, against a no-gen step.

    python benchmarks/sgld_speed.py                    # mnist_net, batch 256, S from tasks/gedi_mnist.yaml
    python benchmarks/sgld_speed.py --code /tmp/old    # the same measurement on another checkout
    python benchmarks/sgld_speed.py --baseline-sgld /tmp/old/nesy_gedi/sgld.py  # + samplers A/B

One run measures, on one backbone and one batch size:

    unit            one forward + backward (to the parameters) of a batch of B inputs
    gedi step       a real training step of gedi.method=gedi: zero_grad, SelfSupervised.losses,
                    backward, optimizer step
    no-gen step     the same step with gedi.method=no-gen (no sampler)
    breakdown       the gedi step split into sampling (SGLD incl. buffer draw/update),
                    augmentation (both views), the loss's forward and backward, optimizer step
    passes          forward / backward passes of the backbone per gedi step, in batches of B,
                    counted with hooks (samples seen by forward, samples whose logits got a
                    gradient)

and the floor: a step cannot cost less than its batch passes, S sampler steps plus the loss
pass over data, negatives and the two views, (S + 4) units; the brief of issue #13 counted
(S + 3) (sampler steps, two views, negatives); both ratios are reported. Times are medians
over `--iters` rounds after `--warmup`; each round runs every measurement once (S + 4 unit
passes, one gedi step, four no-gen steps, one gedi step timed by component), so a change of
load hits all figures alike. Wall time is the headline; process CPU time is recorded beside
it (less sensitive to other processes). torch runs on `--threads` threads (default 1: the
machine is shared), and the load average before and after is recorded next to the CPU model,
so two result files are comparable only at a similar load.

Cheaper negatives, side by side (`variants` in the result): each `--variant "NAME:KEY=VALUE,..."`
(gedi.sgld keys; the default list covers the batch fraction, short-run chains with a long
chain every k-th step, and both) is a GEDI training step of its own, timed in the same round
robin as a no-gen step on the same batch and backbone, so each `ratio_to_nogen` is a ratio of
two figures measured in the same process under the same load. Every round runs each setting
for a whole long/short cycle (the least common multiple of the long_every values) and
records the mean seconds per step; the figure is the median over rounds. The negatives and
SGLD steps each setting actually takes are counted with a forward hook on the backbone (every
forward pass before the loss pass is one SGLD step, over the negatives).

Writes benchmarks/results/sgld_speed.json (or --out) and prints a table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import RESULTS, machine_info, render_table, write_result  # noqa: E402

DEFAULT_TASK = REPO / "tasks" / "gedi_mnist.yaml"
# name: gedi.sgld overrides (comma-separated key=value)
DEFAULT_VARIANTS = (
    "default:",
    "fraction 0.5:batch_fraction=0.5",
    "fraction 0.25:batch_fraction=0.25",
    "short 5, long every 4:short_steps=5,long_every=4",
    "steps 5:steps=5",
    "fraction 0.5, short 5, long every 4:batch_fraction=0.5,short_steps=5,long_every=4",
    "fraction 0.25, short 5, long every 4:batch_fraction=0.25,short_steps=5,long_every=4",
)


# ----------------------------------------------------------------------------- measurements
def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def unit_pass(backbone, x):
    """One forward + backward of the batch `x` to the backbone's parameters."""
    def run():
        backbone.zero_grad(set_to_none=True)
        backbone(x).logsumexp(-1).sum().backward()
    return run


def train_step(backbone, selfsup, optimizer, x, generator):
    """One training step as the training loops take it."""
    def run():
        optimizer.zero_grad(set_to_none=True)
        selfsup.losses(backbone, x, generator)["total"].backward()
        optimizer.step()
    return run


class _Timer:
    """Wraps a callable and adds its wall time to `total`."""

    def __init__(self, fn):
        self.fn, self.total = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - start


def breakdown_step(backbone, selfsup, optimizer, x, generator):
    """One training step split into seconds of sampling, augmentation, the loss's forward
    (the rest of `losses`), its backward and the optimizer step (zero_grad included)."""
    def run() -> dict:
        own = dict(vars(selfsup))  # `augment` is an instance attribute, `sample` a method
        sample, augment = _Timer(selfsup.sample), _Timer(selfsup.augment)
        selfsup.sample, selfsup.augment = sample, augment
        try:
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            total = selfsup.losses(backbone, x, generator)["total"]
            t1 = time.perf_counter()
            total.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
        finally:
            for name in ("sample", "augment"):
                if name in own:
                    setattr(selfsup, name, own[name])
                else:
                    delattr(selfsup, name)
        return {"sampling": sample.total, "augmentation": augment.total,
                "loss_forward": t1 - t0 - sample.total - augment.total,
                "loss_backward": t2 - t1, "optimizer": t3 - t2}
    return run


def count_passes(backbone, selfsup, x, generator) -> dict:
    """Forward and backward passes of `backbone` in one training step, in batches of len(x):
    the samples its forward saw and the samples whose logits received a gradient (sampler
    steps and the loss's backward alike), each divided by the batch size."""
    seen = {"forward": 0, "backward": 0}

    def on_forward(module, inputs, output):
        seen["forward"] += output.shape[0]
        if output.requires_grad:
            output.register_hook(lambda grad: seen.__setitem__("backward", seen["backward"] + grad.shape[0]))

    handle = backbone.register_forward_hook(on_forward)
    try:
        backbone.zero_grad(set_to_none=True)
        selfsup.losses(backbone, x, generator)["total"].backward()
    finally:
        handle.remove()
    batch = x.shape[0]
    return {key: value / batch for key, value in seen.items()}


def compare_samplers(baseline_path: str, config, x, rounds: int, seed: int = 0) -> dict:
    """The SGLD sampler of another `sgld.py` (e.g. an older checkout's) against this run's,
    on one backbone and start batch, alternating call for call so that both see the same
    load: median and minimum seconds per SGLD step of each, and whether both returned the
    same samples from the same generator state."""
    import importlib.util

    import torch

    from nesy_gedi.models.backbones import build_backbone
    from nesy_gedi.objectives import energy
    from nesy_gedi.sgld import sgld

    spec = importlib.util.spec_from_file_location("baseline_sgld", baseline_path)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    torch.manual_seed(seed)
    model = config.model
    backbone = build_backbone(model.backbone, model.num_clusters, in_channels=x.shape[1], **model.options)
    s = config.gedi.sgld
    options = dict(steps=s.steps, step_size=s.step_size, noise_std=s.noise_std,
                   clamp=(s.low, s.high) if s.clamp else None)

    def energy_fn(z):
        return energy(backbone(z))

    samplers = {"baseline": baseline.sgld, "current": sgld}
    times = {key: [] for key in samplers}
    outputs = {}
    for round_ in range(rounds + 1):
        order = list(samplers.items())
        for key, sampler in order if round_ % 2 else order[::-1]:  # alternate who goes first
            generator = torch.Generator().manual_seed(seed + round_)
            start = time.perf_counter()
            outputs[key] = sampler(energy_fn, x, generator=generator, **options)
            if round_:  # the first round warms up
                times[key].append((time.perf_counter() - start) / max(s.steps, 1))
    result = {f"{key}_step_s": statistics.median(values) for key, values in times.items()}
    result.update({f"{key}_step_min_s": min(values) for key, values in times.items()})
    result["speedup"] = result["baseline_step_s"] / result["current_step_s"]
    result["same_samples"] = bool(torch.equal(outputs["baseline"], outputs["current"]))
    result["baseline"] = str(Path(baseline_path).resolve())
    result["rounds"] = rounds
    return result


def parse_variant(text: str) -> tuple[str, list[str]]:
    """ "NAME:KEY=VALUE,..." -> (NAME, ["gedi.sgld.KEY=VALUE", ...])."""
    name, _, settings = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE,... (gedi.sgld keys)")
    return name.strip(), [f"gedi.sgld.{item.strip()}" for item in settings.split(",") if item.strip()]


def count_sampler_work(backbone, selfsup, x, generator, steps: int) -> dict:
    """Negatives and SGLD steps per training step, over `steps` steps, counted with a forward
    hook: each forward pass before the loss pass is one SGLD step over the negatives."""
    calls: list[int] = []
    handle = backbone.register_forward_hook(lambda module, inputs, output: calls.append(output.shape[0]))
    sgld_steps, negatives = [], []
    try:
        for _ in range(steps):
            calls.clear()
            backbone.zero_grad(set_to_none=True)
            selfsup.losses(backbone, x, generator)["total"].backward()
            sgld_steps.append(len(calls) - 1)
            negatives.append(calls[0] if len(calls) > 1 else 0)
    finally:
        handle.remove()
    return {"sgld_steps": sgld_steps, "negatives": negatives}


def fresh_learner(config, method: str, shape: tuple, seed: int, backbone_name: str | None = None) -> tuple:
    """(backbone, self-supervised objective, optimizer, generator) for `method`, seeded alike for
    every method so that the figures compare the same start."""
    import dataclasses

    import torch

    from nesy_gedi.models.backbones import build_backbone
    from nesy_gedi.selfsup import SelfSupervised

    model = config.model if backbone_name is None else dataclasses.replace(config.model, backbone=backbone_name)
    torch.manual_seed(seed)
    backbone = build_backbone(model.backbone, model.num_clusters, in_channels=shape[0], **model.options)
    gedi = dataclasses.replace(config.gedi, method=method)
    selfsup = SelfSupervised.from_config(gedi, shape, model.num_clusters, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(backbone.parameters(), lr=config.train.lr)
    return backbone, selfsup, optimizer, torch.Generator().manual_seed(seed + 1)


def compare_variants(configs: list, x, iters: int, warmup: int, seed: int = 0,
                     backbone_name: str | None = None) -> dict:
    """A no-gen step and the GEDI step of each (name, task config) in `configs`, in one round
    robin: per setting the median over rounds of the mean seconds per step over one whole
    long/short cycle, its ratio to the no-gen step, and the work it counted."""
    import math

    shape = tuple(x.shape[1:])
    cycle = math.lcm(*(config.gedi.sgld.long_every for _, config in configs)) if configs else 1

    def setup(config, method: str):
        backbone, selfsup, optimizer, generator = fresh_learner(config, method, shape, seed, backbone_name)
        return backbone, selfsup, train_step(backbone, selfsup, optimizer, x, generator), generator

    entries = {"no-gen": setup(configs[0][1], "no-gen")}
    entries.update({name: setup(config, "gedi") for name, config in configs})
    work = {name: count_sampler_work(backbone, selfsup, x, generator, cycle)
            for name, (backbone, selfsup, _, generator) in entries.items() if name != "no-gen"}
    times = {name: [] for name in entries}
    cpu = {name: [] for name in entries}
    for round_ in range(warmup + iters):
        for name, (_, _, step, _) in entries.items():
            wall, used = timed(lambda: [step() for _ in range(cycle)])
            if round_ >= warmup:
                times[name].append(wall / cycle)
                cpu[name].append(used / cycle)
    nogen, nogen_cpu = statistics.median(times["no-gen"]), statistics.median(cpu["no-gen"])
    batch = x.shape[0]
    rows = []
    for name, config in configs:
        step_s, cpu_s = statistics.median(times[name]), statistics.median(cpu[name])
        s = config.gedi.sgld
        rows.append({
            "name": name,
            "sgld": {"steps": s.steps, "batch_fraction": s.batch_fraction, "short_steps": s.short_steps,
                     "long_every": s.long_every},
            "step_s": step_s,
            "cpu_step_s": cpu_s,
            "ratio_to_nogen": step_s / nogen,
            "cpu_ratio_to_nogen": cpu_s / nogen_cpu,
            "images_per_s": batch / step_s,
            "negatives_per_step": work[name]["negatives"],
            "sgld_steps_per_step": work[name]["sgld_steps"],
            "mean_sgld_steps": statistics.mean(work[name]["sgld_steps"]),
        })
    return {"batch_size": batch, "cycle_steps": cycle, "nogen_step_s": nogen, "nogen_cpu_step_s": nogen_cpu,
            "rounds": len(times["no-gen"]), "variants": rows}


def variants_table(comparison: dict) -> str:
    rows = [["no-gen step", "", "", f"{comparison['nogen_step_s'] * 1e3:.1f}", "1.00", "1.00"]]
    rows += [[row["name"], f"{statistics.mean(row['negatives_per_step']):g}", f"{row['mean_sgld_steps']:g}",
              f"{row['step_s'] * 1e3:.1f}", f"{row['ratio_to_nogen']:.2f}", f"{row['cpu_ratio_to_nogen']:.2f}"]
             for row in comparison["variants"]]
    return render_table(["GEDI step: sampler setting", "negatives", "SGLD steps", "ms",
                         "x no-gen", "x no-gen (CPU)"], rows)


# ----------------------------------------------------------------------------- one run
def load_batch(batch_size: int, data_root: str | None, seed: int):
    """`batch_size` MNIST training images in [-1, 1], or uniform noise if MNIST is missing."""
    import torch

    from nesy_gedi.data.files import resolve_data_root
    from nesy_gedi.data.images import load_images, to_float
    from nesy_gedi.errors import DataError

    try:
        images, _ = load_images("mnist", str(resolve_data_root(data_root)), "train", download=False)
        return to_float(images[:batch_size]).clone(), "mnist"
    except DataError:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, 1, 28, 28, generator=generator) * 2 - 1, "uniform noise (MNIST not found)"


def measure(config, x, iters: int, warmup: int, seed: int = 0, backbone_name: str | None = None) -> dict:
    """Every figure of one benchmark run on the batch `x` for the task `config`: medians over
    `iters` rounds (after `warmup`), each of S + 4 unit passes, one gedi step, four no-gen
    steps and one gedi step timed by component."""
    import dataclasses

    import nesy_gedi

    model = config.model if backbone_name is None else dataclasses.replace(config.model, backbone=backbone_name)
    shape = tuple(x.shape[1:])
    batch = x.shape[0]
    steps = config.gedi.sgld.steps

    backbone, gedi, optimizer, generator = fresh_learner(config, "gedi", shape, seed, backbone_name)
    nogen_backbone, nogen, nogen_optimizer, nogen_generator = fresh_learner(config, "no-gen", shape, seed,
                                                                            backbone_name)
    passes = count_passes(backbone, gedi, x, generator)
    unit_fn = unit_pass(backbone, x)
    gedi_fn = train_step(backbone, gedi, optimizer, x, generator)
    parts_fn = breakdown_step(backbone, gedi, optimizer, x, generator)
    nogen_fn = train_step(nogen_backbone, nogen, nogen_optimizer, x, nogen_generator)
    # Round robin, so that a change of the machine's load hits every figure alike.
    times = {key: [] for key in ("unit", "gedi", "nogen")}
    cpu = {key: [] for key in times}
    parts = []
    for round_ in range(warmup + iters):
        samples = [("unit", timed(unit_fn)) for _ in range(steps + 4)]
        samples += [("gedi", timed(gedi_fn))]
        samples += [("nogen", timed(nogen_fn)) for _ in range(4)]
        split = parts_fn()
        if round_ >= warmup:
            for key, (wall, used) in samples:
                times[key].append(wall)
                cpu[key].append(used)
            parts.append(split)
    unit, gedi_step, nogen_step = (statistics.median(times[key]) for key in ("unit", "gedi", "nogen"))
    parts = {key: statistics.median(p[key] for p in parts) for key in parts[0]}
    # The loss pass: data and negatives (if generative), the two views (if invariance or prior).
    weights = gedi.weights
    loss_batches = 2 * gedi.generative + 2 * (weights.invariance > 0 or weights.prior > 0)
    floor = (steps + loss_batches) * unit
    brief_floor = (steps + 3) * unit
    cpu_unit, cpu_gedi, cpu_nogen = (statistics.median(cpu[key]) for key in ("unit", "gedi", "nogen"))
    return {
        "code": str(Path(nesy_gedi.__file__).resolve().parent),
        "backbone": model.backbone,
        "batch_size": batch,
        "sgld_steps": steps,
        "unit_s": unit,
        "gedi_step_s": gedi_step,
        "nogen_step_s": nogen_step,
        "gedi_images_per_s": batch / gedi_step,
        "nogen_images_per_s": batch / nogen_step,
        "unit_images_per_s": batch / unit,
        "passes_per_step": passes,
        "loss_batches": loss_batches,
        "floor_units": steps + loss_batches,
        "floor_s": floor,
        "ratio_to_floor": gedi_step / floor,
        "brief_floor_units": steps + 3,
        "brief_floor_s": brief_floor,
        "ratio_to_brief_floor": gedi_step / brief_floor,
        "breakdown_s": parts,
        "breakdown_units": {key: value / unit for key, value in parts.items()},
        "cpu_time": {  # process CPU seconds: less sensitive to other processes than wall time
            "unit_s": cpu_unit,
            "gedi_step_s": cpu_gedi,
            "nogen_step_s": cpu_nogen,
            "ratio_to_floor": cpu_gedi / ((steps + loss_batches) * cpu_unit),
        },
        "samples": {"unit": len(times["unit"]), "gedi_step": len(times["gedi"]), "nogen_step": len(times["nogen"])},
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(result: dict) -> str:
    unit = result["unit_s"]
    rows = [
        ["unit: fwd+bwd of one batch", f"{unit * 1e3:.2f}", "1.00", f"{result['unit_images_per_s']:.0f}"],
        [f"floor: S + {result['loss_batches']} = {result['floor_units']} units", f"{result['floor_s'] * 1e3:.1f}",
         f"{result['floor_units']:.2f}", ""],
        ["gedi step", f"{result['gedi_step_s'] * 1e3:.1f}", f"{result['gedi_step_s'] / unit:.2f}",
         f"{result['gedi_images_per_s']:.0f}"],
        ["no-gen step", f"{result['nogen_step_s'] * 1e3:.1f}", f"{result['nogen_step_s'] / unit:.2f}",
         f"{result['nogen_images_per_s']:.0f}"],
    ]
    rows += [[f"  gedi: {key}", f"{value * 1e3:.1f}", f"{value / unit:.2f}", ""]
             for key, value in result["breakdown_s"].items()]
    text = render_table(["what", "ms", "units", "images/s"], rows)
    passes = result["passes_per_step"]
    return (f"{text}\n\nstep / floor (S+{result['loss_batches']}): {result['ratio_to_floor']:.2f} "
            f"(CPU time: {result['cpu_time']['ratio_to_floor']:.2f})   "
            f"step / (S+3) units: {result['ratio_to_brief_floor']:.2f}   "
            f"batch passes per step: {passes['forward']:g} forward, {passes['backward']:g} backward")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=str(DEFAULT_TASK), help="task file for the SGLD and objective settings")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backbone", default=None, help="override the task's model.backbone")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="task overrides")
    parser.add_argument("--iters", type=int, default=15, help="timed rounds (each: S+4 units, 2 gedi, 4 no-gen steps)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--code", default=None, help="the checkout whose nesy_gedi is measured (default: this one)")
    parser.add_argument("--baseline-sgld", default=None, metavar="PATH",
                        help="also time another sgld.py's sampler against this one, call for call")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME:KEY=VALUE,...",
                        help="a sampler setting (gedi.sgld keys) to time against a no-gen step; repeatable "
                             "(default: the fraction and short-run settings of DEFAULT_VARIANTS)")
    parser.add_argument("--variant-iters", type=int, default=8, help="timed rounds of the variant comparison")
    parser.add_argument("--out", default=str(RESULTS / "sgld_speed.json"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(args.code).resolve() if args.code else REPO))
    import torch

    from nesy_gedi.config import load_config

    torch.set_num_threads(args.threads)
    config = load_config(args.task, args.set)
    x, data = load_batch(args.batch_size, args.data_root, config.train.seed)
    load_before = os.getloadavg()
    result = measure(config, x, args.iters, args.warmup, seed=config.train.seed, backbone_name=args.backbone)
    variants = [parse_variant(text) for text in (args.variant or DEFAULT_VARIANTS)]
    configs = [(name, load_config(args.task, args.set + overrides)) for name, overrides in variants]
    result["variants"] = compare_variants(configs, x, args.variant_iters, 1, seed=config.train.seed,
                                          backbone_name=args.backbone)
    if args.baseline_sgld:
        result["sampler_comparison"] = compare_samplers(args.baseline_sgld, config, x, args.iters,
                                                        seed=config.train.seed)
    load_after = os.getloadavg()
    record = {
        "machine": dict(machine_info(), cpu_model=cpu_model(), torch_threads=torch.get_num_threads(),
                        load_average_before=[round(v, 2) for v in load_before],
                        load_average_after=[round(v, 2) for v in load_after]),
        "task": str(args.task),
        "overrides": args.set,
        "data": data,
        "iters": args.iters,
        "warmup": args.warmup,
        "result": result,
    }
    path = write_result(Path(args.out), record)
    print(table(result))
    print("\n" + variants_table(result["variants"]))
    if "sampler_comparison" in result:
        ab = result["sampler_comparison"]
        print(f"\nsampler per SGLD step: baseline {ab['baseline_step_s'] * 1e3:.2f} ms "
              f"(min {ab['baseline_step_min_s'] * 1e3:.2f}), this {ab['current_step_s'] * 1e3:.2f} ms "
              f"(min {ab['current_step_min_s'] * 1e3:.2f}): x{ab['speedup']:.3f}; "
              f"same samples: {ab['same_samples']}  ({ab['baseline']})")
    print(f"\n{cpu_model()}, {torch.get_num_threads()} torch thread(s), load average "
          f"{load_before[0]:.2f} -> {load_after[0]:.2f}; wrote {path}")
    return record


if __name__ == "__main__":
    main()
