"""The `nesy-gedi` command line: compile, train, evaluate, pretrain, diagnose, count-shortcuts."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import NesyError


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="task file (YAML), e.g. tasks/mnist_addition.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (train.epochs=3) or a logic parameter (N=4); repeatable")
    parser.add_argument("--out", help="run directory (default runs/<task name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    parser.add_argument("--data-root", help="data folder (default $NESY_GEDI_DATA, else a user cache folder)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the task's train.device)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard event files into the run directory (train.tensorboard)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nesy-gedi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    compile_parser = commands.add_parser("compile", help="compile a logic file and report its circuit")
    compile_parser.add_argument("logic", help="logic file, e.g. logic/addition.logic")
    compile_parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                                help="set a parameter of the logic file, e.g. N=4; repeatable")
    compile_parser.add_argument("--vtree", default="blocks", help="blocks (default), block-tree, right or balanced")
    compile_parser.add_argument("--no-cache", action="store_true", help="compile even if a cached circuit exists")
    compile_parser.add_argument("--json", action="store_true", help="print one JSON object")

    _add_run_options(commands.add_parser("train", help="train with the semantic loss on a task"))
    _add_run_options(commands.add_parser("pretrain", help="self-supervised GEDI training on unlabeled images"))

    evaluate_parser = commands.add_parser("evaluate", help="evaluate a run's checkpoint on its test splits")
    evaluate_parser.add_argument("run_dir")
    evaluate_parser.add_argument("--data-root")
    evaluate_parser.add_argument("--device")

    diagnose_parser = commands.add_parser("diagnose", help="diagnose reasoning shortcuts in a trained run")
    diagnose_parser.add_argument("run_dir")
    diagnose_parser.add_argument("--data-root")
    diagnose_parser.add_argument("--device")

    count_parser = commands.add_parser("count-shortcuts", help="count a task's reasoning shortcuts exactly")
    count_parser.add_argument("task")
    count_parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    count_parser.add_argument("--per-position", action="store_true",
                              help="one concept map per position instead of one shared map")
    count_parser.add_argument("--permutations-only", action="store_true",
                              help="print only the permutation shortcuts (what is left once the clusters are "
                                   "right) and the labels that exclude them (--json always has both)")
    count_parser.add_argument("--json", action="store_true")
    return parser


def _parse_params(overrides: list[str]) -> dict:
    from .config.overrides import parse_overrides

    params = {}
    for key, value in parse_overrides(overrides):
        if isinstance(value, bool) or not isinstance(value, int):
            raise NesyError(f"--set {key}={value!r}: logic parameters are integers")
        params[key] = value
    return params


def command_compile(args) -> int:
    from .compiler import compile_file

    compiled = compile_file(args.logic, _parse_params(args.overrides), vtree_type=args.vtree,
                            use_cache=not args.no_cache)
    summary = compiled.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    knowledge = compiled.knowledge
    print(f"{args.logic}  params {summary['params'] or '{}'}")
    for role, heading in (("concept", "concepts"), ("hidden", "hidden"), ("label", "labels")):
        variables = knowledge.role(role)
        if variables:
            names = ", ".join(v.name for v in variables[:12]) + (" ..." if len(variables) > 12 else "")
            print(f"  {heading:9s} {len(variables):4d}  {names}")
    print(f"  constraints   {summary['constraints']}")
    print(f"  SDD size      {summary['sdd_size']}  ({summary['sdd_nodes']} nodes)")
    print(f"  model count   {summary['model_count']}")
    cached = " (cached)" if summary["cache_hit"] else ""
    print(f"  compile time  {summary['compile_seconds']:.3f} s{cached}")
    return 0


def _run_task(args, loop) -> int:
    from .config.load import load_config

    config = load_config(args.task, args.overrides, pretrain=args.command == "pretrain")
    if args.tensorboard:
        config.train.tensorboard = True
    run_dir = Path(args.out) if args.out is not None else Path("runs") / config.name
    final = loop(config, run_dir, resume=args.resume, data_root=args.data_root, device=args.device)
    if final:
        _print_final(final, run_dir)
    return 0


def command_train(args) -> int:
    from .train import train

    return _run_task(args, train)


def command_pretrain(args) -> int:
    from .pretrain import pretrain

    return _run_task(args, pretrain)


def command_evaluate(args) -> int:
    from .evaluate import evaluate_run

    results = evaluate_run(Path(args.run_dir), data_root=args.data_root, device=args.device)
    print(json.dumps(results, indent=2))
    return 0


def command_diagnose(args) -> int:
    from .diagnose import diagnose_run

    diagnose_run(Path(args.run_dir), data_root=args.data_root, device=args.device)
    return 0


def command_count_shortcuts(args) -> int:
    from .count_shortcuts import count_shortcuts_for_task, format_shortcut_count

    result = count_shortcuts_for_task(args.task, args.overrides, per_position=args.per_position)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_shortcut_count(result, permutations_only=args.permutations_only))
    return 0


def _print_final(final: dict, run_dir: Path) -> None:
    shown = {k: v for k, v in final.items() if isinstance(v, (int, float, str)) and v is not None}
    width = max(len(k) for k in shown) if shown else 0
    for key, value in shown.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:{width}s}  {text}")
    print(f"run directory: {run_dir}")


COMMANDS = {
    "compile": command_compile,
    "train": command_train,
    "pretrain": command_pretrain,
    "evaluate": command_evaluate,
    "diagnose": command_diagnose,
    "count-shortcuts": command_count_shortcuts,
}


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"nesy-gedi: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn_in_one_line  # e.g. a circuit cache entry that failed verification
    try:
        return COMMANDS[args.command](args)
    except NesyError as error:
        print(f"nesy-gedi: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nesy-gedi: interrupted; continue from the last finished epoch with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
