"""Hostile and broken run directories, and runs that move: nothing read from disk is trusted.

A run directory is read back by `evaluate`, `diagnose`, `train/pretrain --resume` and
`--set model.init=RUN`. Whatever is in it, each of them either works or ends with exactly
one line `nesy-gedi: error: ...` (exit status 2) that names the file; none executes code
stored in a checkpoint, none writes a byte into a run it refuses, and two processes never
write the same run at once. Every command runs in-process through `cli.main`, with a tiny
MNIST-addition run (64 training pairs, 1 epoch) and a tiny two-moons pretrain run shared by
the module.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from nesy_gedi import cli
from nesy_gedi.config import load_config
from nesy_gedi.errors import NesyError
from nesy_gedi.runs import CHECKPOINT, CONFIG, MANIFEST, METRICS, RunLock, check_resume, start_run_dir
from killing import kill_at_batch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "tasks" / "mnist_addition.yaml"
MOONS = ROOT / "tasks" / "gedi_moons.yaml"
ADDITION_LOGIC = ROOT / "logic" / "addition.logic"
TINY = ["data.train_examples=64", "data.test_examples=20", "train.epochs=1", "train.progress=false",
        "train.num_threads=1"]
MOONS_TINY = ["data.toy_samples=200", "train.epochs=1", "gedi.sgld.steps=2", "gedi.sgld.buffer_size=100",
              "train.num_threads=1", "train.progress=false"]


# ----------------------------------------------------------------------------- helpers
def _sets(overrides: list[str]) -> list[str]:
    return [part for item in overrides for part in ("--set", item)]


def _train_args(run_dir, mnist_root, *extra: str, task=ADDITION, overrides=TINY) -> list[str]:
    return ["train", str(task), "--out", str(run_dir), "--data-root", str(mnist_root), *_sets(overrides), *extra]


def _pretrain_args(run_dir, *extra: str, overrides=MOONS_TINY) -> list[str]:
    return ["pretrain", str(MOONS), "--out", str(run_dir), *_sets(overrides), *extra]


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *parts: str) -> str:
    """Exit status 2, and stderr is exactly one `nesy-gedi: error:` line holding every part."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nesy-gedi: error: "), err
    assert lines[0].isprintable(), lines[0]  # no NUL or control characters from the damaged file
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def _snapshot(run_dir: Path) -> dict:
    """Every file of the run directory (hidden ones included) and its bytes."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(Path(run_dir).rglob("*"))
            if p.is_file()}


def _copy(run_dir: Path, where: Path) -> Path:
    shutil.copytree(run_dir, where)
    return where


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=True)


class _Payload:
    """Unpickling this object opens (creates) `marker`: code run from a checkpoint file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_payload(run_dir: Path, marker: Path) -> None:
    """The run's own checkpoint, every key intact, plus one object whose unpickling runs code."""
    checkpoint = _checkpoint(run_dir)
    checkpoint["payload"] = _Payload(marker)
    torch.save(checkpoint, Path(run_dir) / CHECKPOINT)


# ----------------------------------------------------------------------------- the shared runs
@pytest.fixture(scope="module")
def train_run(mnist_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "addition"
    assert cli.main(_train_args(run_dir, mnist_root)) == 0
    assert (run_dir / CHECKPOINT).is_file()
    return run_dir


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "moons"
    assert cli.main(_pretrain_args(run_dir)) == 0
    assert (run_dir / CHECKPOINT).is_file()
    return run_dir


# ============================================================================= 1. code in a checkpoint
def test_the_planted_payload_runs_code_when_unpickled_unsafely(pretrain_run, tmp_path):
    """The payload is live: the old `torch.load(weights_only=False)` creates the marker."""
    run_dir, marker = _copy(pretrain_run, tmp_path / "run"), tmp_path / "marker"
    _plant_payload(run_dir, marker)
    torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    assert marker.exists()


LOAD_PATHS = ["evaluate", "diagnose", "train --resume", "pretrain --resume", "train model.init",
              "pretrain model.init"]


@pytest.mark.mnist
@pytest.mark.parametrize("path", LOAD_PATHS)
def test_a_checkpoint_that_runs_code_is_never_unpickled(path, train_run, pretrain_run, mnist_root, tmp_path,
                                                        capsys):
    marker = tmp_path / "marker"
    source = pretrain_run if path.startswith("pretrain") else train_run
    run_dir = _copy(source, tmp_path / "run")
    _plant_payload(run_dir, marker)
    before = _snapshot(run_dir)
    fresh = tmp_path / "fresh"
    argv = {
        "evaluate": ["evaluate", run_dir, "--data-root", mnist_root],
        "diagnose": ["diagnose", run_dir, "--data-root", mnist_root],
        "train --resume": _train_args(run_dir, mnist_root, "--resume"),
        "pretrain --resume": _pretrain_args(run_dir, "--resume"),
        "train model.init": _train_args(fresh, mnist_root, "--set", f"model.init={run_dir}"),
        "pretrain model.init": _pretrain_args(fresh, "--set", f"model.init={run_dir}"),
    }[path]
    code, _, err = _cli(capsys, argv)
    _assert_one_line_error(code, err, f"{run_dir / CHECKPOINT}: checkpoint is unreadable or unsafe",
                           "it was not loaded")
    assert not marker.exists()
    assert _snapshot(run_dir) == before  # nothing written into the refused run (no evaluation.json, ...)
    assert not (fresh / CHECKPOINT).exists()


# ============================================================================= 2. --resume validates first
RESUME_CASES = [
    ("backbone", ["model.backbone=mlp"], ["model.backbone: 'mnist_net' -> 'mlp'"]),
    ("backbone-options", ["model.options={hidden: [64, 32]}"], ["model.options: {} -> {'hidden': [64, 32]}"]),
    ("learning-rate", ["train.lr=0.01"], ["train.lr: 0.001 -> 0.01"]),
    ("logic-parameter", ["N=2"], ["logic.params: {'N': 1} -> {'N': 2}"]),
    ("two-keys", ["train.lr=0.01", "train.seed=3"], ["train.lr: 0.001 -> 0.01", "train.seed: 0 -> 3"]),
]


@pytest.mark.mnist
@pytest.mark.parametrize("overrides, expected", [c[1:] for c in RESUME_CASES], ids=[c[0] for c in RESUME_CASES])
def test_resume_with_another_config_is_refused_before_anything_is_written(overrides, expected, train_run,
                                                                          mnist_root, tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume", overrides=TINY + overrides))
    _assert_one_line_error(code, err, str(run_dir), "cannot resume with a different config", *expected)
    assert _snapshot(run_dir) == before
    code, out, err = _cli(capsys, ["evaluate", run_dir, "--data-root", mnist_root])
    assert code == 0, err
    assert json.loads(out)["test_examples"] == 20


@pytest.mark.mnist
def test_resume_with_a_changed_logic_file_is_refused_before_anything_is_written(train_run, mnist_root, tmp_path,
                                                                                capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    logic = tmp_path / "addition.logic"
    logic.write_text(ADDITION_LOGIC.read_text().replace("# Addition", "# Edited: addition", 1))
    assert logic.read_bytes() != ADDITION_LOGIC.read_bytes()
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume", "--set", f"logic.file={logic}"))
    _assert_one_line_error(code, err, f"{logic}: cannot resume: the logic file changed since the run started",
                           "sha256")
    assert _snapshot(run_dir) == before
    # the same logic text at another path is the same knowledge: the resume goes ahead
    shutil.copyfile(ADDITION_LOGIC, logic)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume", "--set", f"logic.file={logic}"))
    assert code == 0, err
    assert (run_dir / CONFIG).read_bytes() == before[CONFIG]


@pytest.mark.mnist
def test_a_pretrain_run_resumed_by_train_is_refused_before_anything_is_written(pretrain_run, mnist_root,
                                                                               tmp_path, capsys):
    run_dir = _copy(pretrain_run, tmp_path / "run")
    before = _snapshot(run_dir)
    for task, overrides in ((MOONS, MOONS_TINY), (ADDITION, TINY)):
        code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume", task=task, overrides=overrides))
        _assert_one_line_error(code, err, f"{run_dir}: cannot resume: this is a pretrain run, not a train run")
        assert _snapshot(run_dir) == before


@pytest.mark.mnist
def test_a_train_run_resumed_by_pretrain_is_refused_before_anything_is_written(train_run, tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, _pretrain_args(run_dir, "--resume"))
    _assert_one_line_error(code, err, f"{run_dir}: cannot resume: this is a train run, not a pretrain run")
    assert _snapshot(run_dir) == before


# ============================================================================= 3. one writer per run
_HOLDER = """
import fcntl, os, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.seek(0); handle.truncate(); handle.write(f"process {os.getpid()}"); handle.flush()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.mnist
def test_a_run_directory_locked_by_another_process_is_refused(mnist_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir / ".lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(run_dir)
        code, _, err = _cli(capsys, _train_args(run_dir, mnist_root))
        _assert_one_line_error(code, err, f"{run_dir}: the run directory is being written by process {holder.pid}",
                               "choose another --out")
        assert _snapshot(run_dir) == before  # only the holder's .lock: no config.yaml, no metrics.jsonl
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root))  # the holder is gone: the run goes ahead
    assert code == 0, err
    assert (run_dir / CHECKPOINT).is_file()


def test_waiting_for_a_run_blocks_until_its_writer_lets_go(tmp_path):
    RunLock(tmp_path / "never_started").wait()  # nothing to wait for
    assert not (tmp_path / "never_started").exists()
    lock = RunLock(tmp_path / "run").acquire()
    waiter = threading.Thread(target=RunLock(tmp_path / "run").wait)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # still held
    lock.release()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    RunLock(tmp_path / "run").acquire().release()  # waiting took no lock of its own


@pytest.mark.mnist
def test_resuming_a_run_that_another_writer_holds_is_refused(train_run, mnist_root, tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    lock = RunLock(run_dir).acquire()
    try:
        before = _snapshot(run_dir)
        code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume"))
        _assert_one_line_error(code, err, f"{run_dir}: the run directory is being written by", "--out")
        assert _snapshot(run_dir) == before
    finally:
        lock.release()
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume"))
    assert code == 0, err
    assert (run_dir / METRICS).read_bytes() == before[METRICS]


# ============================================================================= 4. damaged run files
@pytest.mark.mnist
def test_a_half_written_last_metrics_line_does_not_block_resume(mnist_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    two_epochs = TINY + ["train.epochs=2"]
    with monkeypatch.context() as patch:
        kill_at_batch(patch, 6)  # 4 steps per epoch: killed in epoch 2, after checkpointing epoch 1
        code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, overrides=two_epochs))
    assert code == 130, err
    assert [r["epoch"] for r in map(json.loads, (run_dir / METRICS).read_text().splitlines())] == [1]
    with open(run_dir / METRICS, "a", encoding="utf-8") as stream:
        stream.write('{"epoch": 2, "phase": "train", "seco')  # killed while writing epoch 2's line
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume", overrides=two_epochs))
    assert code == 0, err
    text = (run_dir / METRICS).read_text()
    assert text.endswith("\n")
    assert [r["epoch"] for r in map(json.loads, text.splitlines())] == [1, 2]
    assert json.loads((run_dir / "final.json").read_text())["epochs"] == 2


@pytest.mark.mnist
def test_a_damaged_middle_metrics_line_is_one_error_naming_file_and_line(train_run, mnist_root, tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    records = (run_dir / METRICS).read_text()
    (run_dir / METRICS).write_text('{"epoch": 0}\n{"epoch": 1, oops\n' + records)
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume"))
    _assert_one_line_error(code, err, f"{run_dir / METRICS}:2: damaged line (not JSON)")
    assert _snapshot(run_dir) == before


def _empty_config(run_dir: Path) -> tuple[str, ...]:
    (run_dir / CONFIG).write_bytes(b"")
    return (f"{run_dir / CONFIG}: damaged config",)


def _config_not_yaml(run_dir: Path) -> tuple[str, ...]:
    (run_dir / CONFIG).write_bytes(b"name: [unclosed\n\x00\x01")
    return (f"{run_dir / CONFIG}: damaged config",)


def _manifest_garbage(run_dir: Path) -> tuple[str, ...]:
    (run_dir / MANIFEST).write_bytes(b"\x89PNG{{{ not json")
    return (f"{run_dir / MANIFEST}: damaged run manifest",)


def _manifest_not_object(run_dir: Path) -> tuple[str, ...]:
    (run_dir / MANIFEST).write_text("[1, 2, 3]\n")
    return (f"{run_dir / MANIFEST}: damaged run manifest",)


def _logic_copy_edited(run_dir: Path) -> tuple[str, ...]:
    with open(run_dir / "knowledge.logic", "a", encoding="utf-8") as stream:
        stream.write("# edited\n")
    return (f"{run_dir / 'knowledge.logic'}: knowledge.logic was changed after the run started",)


def _logic_copy_missing(run_dir: Path) -> tuple[str, ...]:
    (run_dir / "knowledge.logic").unlink()
    return (f"{run_dir}: the run's copy of its logic file is missing",)


def _set_logic_copy(run_dir: Path, name: str) -> None:
    manifest = json.loads((run_dir / MANIFEST).read_text())
    manifest["logic"]["copy"] = name
    (run_dir / MANIFEST).write_text(json.dumps(manifest))


def _logic_copy_is_a_folder(run_dir: Path) -> tuple[str, ...]:
    _set_logic_copy(run_dir, ".")
    return (f"{run_dir}: the run's copy of its logic file is missing ('.')",)


def _logic_copy_outside_the_run(run_dir: Path) -> tuple[str, ...]:
    shutil.copyfile(run_dir / "knowledge.logic", run_dir.parent / "outside.logic")  # same bytes, same sha256
    _set_logic_copy(run_dir, "../outside.logic")
    return (f"{run_dir}: the run's copy of its logic file is missing ('../outside.logic')",)


def _logic_copy_name_with_nul(run_dir: Path) -> tuple[str, ...]:
    _set_logic_copy(run_dir, "knowledge\x00.logic")
    return (f"{run_dir}: the run's copy of its logic file is missing ('knowledge\\x00.logic')",)


RUN_FILE_DAMAGE = {"empty-config": _empty_config, "config-not-yaml": _config_not_yaml,
                   "manifest-garbage": _manifest_garbage,
                   "manifest-not-object": _manifest_not_object, "logic-copy-edited": _logic_copy_edited,
                   "logic-copy-missing": _logic_copy_missing,
                   "logic-copy-folder": _logic_copy_is_a_folder, "logic-copy-outside": _logic_copy_outside_the_run,
                   "logic-copy-nul": _logic_copy_name_with_nul}


@pytest.mark.mnist
@pytest.mark.parametrize("command", ["evaluate", "diagnose"])
@pytest.mark.parametrize("damage", list(RUN_FILE_DAMAGE))
def test_damaged_run_files_are_one_error_naming_the_file(damage, command, train_run, mnist_root, tmp_path,
                                                         capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    expected = RUN_FILE_DAMAGE[damage](run_dir)
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, [command, run_dir, "--data-root", mnist_root])
    _assert_one_line_error(code, err, *expected)
    assert _snapshot(run_dir) == before


@pytest.mark.mnist
def test_unreadable_metrics_are_one_error_naming_the_file(train_run, mnist_root, tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    (run_dir / METRICS).unlink()
    (run_dir / METRICS).mkdir()
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume"))
    _assert_one_line_error(code, err, f"{run_dir / METRICS}: cannot read the metrics")
    assert _snapshot(run_dir) == before


@pytest.mark.mnist
def test_resume_with_a_missing_logic_file_is_one_error_naming_it(train_run, mnist_root, tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    missing = tmp_path / "gone.logic"
    before = _snapshot(run_dir)
    code, _, err = _cli(capsys, _train_args(run_dir, mnist_root, "--resume", "--set", f"logic.file={missing}"))
    _assert_one_line_error(code, err, f"{missing}: cannot resume: cannot read the logic file")
    assert _snapshot(run_dir) == before


def test_resume_compares_data_path_as_recorded(tmp_path, monkeypatch):
    """config.yaml records data.path absolute; resuming with the same relative data.path (from the
    task's folder or another working directory) is the same run, another folder is not."""
    (tmp_path / "images").mkdir()
    (tmp_path / "other").mkdir()
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    config = load_config(ADDITION, ["data.dataset=folder", "data.path=images"])
    start_run_dir(run_dir, config, "train", resume=False)
    assert yaml.safe_load((run_dir / CONFIG).read_text())["data"]["path"] == str(tmp_path / "images")
    check_resume(run_dir, load_config(ADDITION, ["data.dataset=folder", "data.path=images"]), "train")
    monkeypatch.chdir(tmp_path / "other")
    check_resume(run_dir, load_config(ADDITION, ["data.dataset=folder", f"data.path={tmp_path / 'images'}"]),
                 "train")
    with pytest.raises(NesyError, match="cannot resume with a different config \\(data.path: "):
        check_resume(run_dir, load_config(ADDITION, ["data.dataset=folder", f"data.path={tmp_path / 'other'}"]),
                     "train")


@pytest.mark.parametrize("kind, task, base, changed, refused", [
    # a no-gen pretraining has no energy term: a changed default of its weight is not a new run
    ("pretrain", MOONS, ["gedi.method=no-gen"], ["gedi.method=no-gen", "gedi.energy_magnitude=0.3",
                                                 "gedi.sgld.steps=3"], None),
    ("pretrain", MOONS, ["gedi.method=gedi"], ["gedi.method=gedi", "gedi.energy_magnitude=0.3"],
     "gedi.energy_magnitude: 0.1 -> 0.3"),
    ("pretrain", MOONS, ["gedi.method=no-gen"], ["gedi.method=gedi"], "gedi.method: 'no-gen' -> 'gedi'"),
    # an sl run reads no gedi key; sl+gedi with no-gen reads the invariance but not the sampler
    ("train", ADDITION, [], ["modes={sl: {gedi: {energy_magnitude: 0.3}}}"], None),
    ("train", ADDITION, ["train.mode=sl+gedi", "gedi.method=no-gen"],
     ["train.mode=sl+gedi", "gedi.method=no-gen", "gedi.sgld.steps=3"], None),
    ("train", ADDITION, ["train.mode=sl+gedi", "gedi.method=no-gen"],
     ["train.mode=sl+gedi", "gedi.method=no-gen", "gedi.invariance=2"], "gedi.invariance: 1.0 -> 2.0"),
], ids=["no-gen-ignores-energy", "gedi-reads-energy", "method", "sl-ignores-gedi", "no-gen-ignores-sgld",
        "no-gen-reads-invariance"])
def test_resume_compares_only_the_keys_the_run_reads(kind, task, base, changed, refused, tmp_path):
    run_dir = tmp_path / "run"
    start_run_dir(run_dir, load_config(task, base), kind, resume=False)
    later = load_config(task, changed)
    if refused is None:
        check_resume(run_dir, later, kind)
    else:
        with pytest.raises(NesyError, match="cannot resume with a different config \\(" + refused.replace("(", "\\(")):
            check_resume(run_dir, later, kind)


def _wrong_shape(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    checkpoint = _checkpoint(run_dir)
    checkpoint["weights"]["backbone.classifier.0.weight"] = torch.zeros(120, 255)
    torch.save(checkpoint, run_dir / CHECKPOINT)
    return ("architecture mismatch", "classifier.0.weight has shape (120, 255) there but (120, 256) here")


def _missing_tensor(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    checkpoint = _checkpoint(run_dir)
    del checkpoint["weights"]["backbone.classifier.4.bias"]
    torch.save(checkpoint, run_dir / CHECKPOINT)
    return ("architecture mismatch", "missing", "classifier.4.bias")


def _nan_weights(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    checkpoint = _checkpoint(run_dir)
    checkpoint["weights"]["backbone.classifier.4.bias"] = torch.full((10,), float("nan"))
    torch.save(checkpoint, run_dir / CHECKPOINT)
    return ("non-finite weights", "classifier.4.bias")


def _truncated(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    data = (run_dir / CHECKPOINT).read_bytes()
    (run_dir / CHECKPOINT).write_bytes(data[:100])
    return ("checkpoint is unreadable or unsafe", "it was not loaded")


def _empty_file(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    (run_dir / CHECKPOINT).write_bytes(b"")
    return ("checkpoint is unreadable or unsafe",)


def _not_a_mapping(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    torch.save([torch.zeros(3), 1, "x"], run_dir / CHECKPOINT)
    return ("checkpoint is not a mapping",)


def _no_weights(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    checkpoint = _checkpoint(run_dir)
    checkpoint["weights"] = "not weights"
    torch.save(checkpoint, run_dir / CHECKPOINT)
    return ("checkpoint holds no weights",)


def _pretrain_kind(run_dir: Path, pretrain_run: Path) -> tuple[str, ...]:
    shutil.copyfile(pretrain_run / CHECKPOINT, run_dir / CHECKPOINT)
    return ("kind 'pretrain'",)


CHECKPOINT_DAMAGE = {"wrong-shape": _wrong_shape, "missing-tensor": _missing_tensor, "nan-weights": _nan_weights,
                     "truncated": _truncated, "empty-file": _empty_file, "not-a-mapping": _not_a_mapping,
                     "no-weights": _no_weights, "pretrain-kind": _pretrain_kind}
# Each damage through evaluate; the weight damages also through --resume and model.init.
CHECKPOINT_CASES = [(damage, "evaluate") for damage in CHECKPOINT_DAMAGE] + [
    (damage, "train --resume") for damage in ("wrong-shape", "nan-weights", "pretrain-kind", "truncated")] + [
    (damage, "train model.init") for damage in ("wrong-shape", "nan-weights", "not-a-mapping", "truncated")]


@pytest.mark.mnist
@pytest.mark.parametrize("damage, command", CHECKPOINT_CASES, ids=[f"{d}-{c}" for d, c in CHECKPOINT_CASES])
def test_a_damaged_checkpoint_is_one_error_naming_the_file(damage, command, train_run, pretrain_run, mnist_root,
                                                           tmp_path, capsys):
    run_dir = _copy(train_run, tmp_path / "run")
    expected = CHECKPOINT_DAMAGE[damage](run_dir, pretrain_run)
    before = _snapshot(run_dir)
    fresh = tmp_path / "fresh"
    argv = {"evaluate": ["evaluate", run_dir, "--data-root", mnist_root],
            "train --resume": _train_args(run_dir, mnist_root, "--resume"),
            "train model.init": _train_args(fresh, mnist_root, "--set", f"model.init={run_dir}")}[command]
    code, out, err = _cli(capsys, argv)
    line = _assert_one_line_error(code, err, *expected)
    assert str(run_dir) in line
    if damage != "pretrain-kind":
        assert f"{run_dir / CHECKPOINT}: " in line
    assert "size mismatch" not in err and "Error(s) in loading state_dict" not in err
    assert out == ""  # nothing evaluated
    assert _snapshot(run_dir) == before
    assert not (fresh / CHECKPOINT).exists()


# ============================================================================= 5. portable run directories
PORTABLE_TASK = """\
name: portable_addition
logic:
  file: my.logic
  params: {N: 1}
data:
  dataset: mnist
model:
  backbone: mnist_net
train:
  mode: sl
  batch_size: 16
  lr: 0.001
  seed: 0
"""


@pytest.fixture(scope="module")
def portable(mnist_root, tmp_path_factory) -> dict:
    """A run trained from its own project folder (relative logic path, cwd = that folder),
    then moved elsewhere with shutil.move."""
    base = tmp_path_factory.mktemp("portable")
    project = base / "project"
    project.mkdir()
    (project / "task.yaml").write_text(PORTABLE_TASK)
    shutil.copyfile(ADDITION_LOGIC, project / "my.logic")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        assert cli.main(["train", "task.yaml", "--out", "run", "--data-root", str(mnist_root), *_sets(TINY)]) == 0
    moved = base / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(project / "run"), str(moved))
    return {"project": project, "moved": moved}


def _portable_copy(portable: dict, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(project folder, moved run, a third working directory), private to the test."""
    project = _copy(portable["project"], tmp_path / "project")
    moved = _copy(portable["moved"], tmp_path / "elsewhere" / "moved")
    third = tmp_path / "third"
    third.mkdir()
    return project, moved, third


@pytest.mark.mnist
@pytest.mark.parametrize("what", ["deleted", "changed"])
def test_a_moved_run_works_without_its_logic_file(what, portable, mnist_root, tmp_path, monkeypatch, capsys):
    project, moved, third = _portable_copy(portable, tmp_path)
    if what == "deleted":
        (project / "my.logic").unlink()
    else:
        (project / "my.logic").write_text("param N = 1\nconcept a : 0..1\nlabel s : 0..1\nconstraint s == a\n")
    monkeypatch.chdir(third)
    code, out, err = _cli(capsys, ["evaluate", moved, "--data-root", mnist_root])
    assert code == 0, err
    results = json.loads(out)
    assert results["test_examples"] == 20 and 0.0 <= results["test_label_accuracy"] <= 1.0
    assert (moved / "evaluation.json").is_file()
    code, _, err = _cli(capsys, ["diagnose", moved, "--data-root", mnist_root])
    assert code == 0, err
    assert json.loads((moved / "diagnosis.json").read_text())["task"] == "portable_addition"
    code, _, err = _cli(capsys, _train_args(third / "new", mnist_root, "--set", f"model.init={moved}"))
    assert code == 0, err
    assert (third / "new" / CHECKPOINT).is_file()
    assert sorted(p.name for p in third.iterdir()) == ["new"]  # nothing written into the working directory


@pytest.mark.mnist
def test_a_moved_run_resumes_with_its_unchanged_logic_file(portable, mnist_root, tmp_path, monkeypatch, capsys):
    project, moved, third = _portable_copy(portable, tmp_path)
    monkeypatch.chdir(third)
    before = _snapshot(moved)
    code, _, err = _cli(capsys, _train_args(moved, mnist_root, "--resume", task=project / "task.yaml"))
    assert code == 0, err
    after = _snapshot(moved)
    for name in (CONFIG, MANIFEST, "knowledge.logic", CHECKPOINT):
        assert after[name] == before[name]
    assert [r["epoch"] for r in map(json.loads, after[METRICS].decode().splitlines())] == [1]


@pytest.mark.mnist
def test_a_moved_run_refuses_to_resume_with_a_changed_logic_file(portable, mnist_root, tmp_path, monkeypatch,
                                                                 capsys):
    project, moved, third = _portable_copy(portable, tmp_path)
    logic = project / "my.logic"
    logic.write_text(logic.read_text() + "# a comment added after the run\n")
    monkeypatch.chdir(third)
    before = _snapshot(moved)
    code, _, err = _cli(capsys, _train_args(moved, mnist_root, "--resume", task=project / "task.yaml"))
    _assert_one_line_error(code, err, "my.logic: cannot resume: the logic file changed since the run started",
                           "sha256")
    assert str(project) in err  # the logic file is named where it is, not relative to the working directory
    assert _snapshot(moved) == before
