"""Multi-process training under torchrun (gloo on the CPU), and the multi-digit addition tasks.

The torchrun tests start two real processes on the loopback interface:
  * the CLI as users run it (`python -m torch.distributed.run ... -m nesy_gedi train`):
    it must finish, only rank 0 may write the run directory, and the result must equal a
    single-process run whose batch is the two ranks' batches together (each rank takes
    every 2nd example of the shared permutation and the gradients are averaged, so a step
    of two ranks at batch b is a step of one process at batch 2b);
  * the same command through a small launcher that records each rank's final parameters
    when the process group is torn down: the two ranks must hold the same weights.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nesy_gedi.compiler import compile_file
from nesy_gedi.config import load_config
from nesy_gedi.builders import build_circuit
from nesy_gedi.pretrain import pretrain
from nesy_gedi.runs import CHECKPOINT, CONFIG, FINAL, LOGIC_COPY, MANIFEST, METRICS, load_checkpoint, read_metrics
from nesy_gedi.train import train

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "tasks" / "mnist_addition.yaml"
LOGIC = ROOT / "logic" / "addition.logic"
TIMEOUT = 300  # seconds for one two-process run (about 30 s on a busy 2-core machine)
EPOCHS = 2
TINY = ["data.train_examples=64", "data.test_examples=32", "train.progress=false", "train.num_threads=1",
        f"train.epochs={EPOCHS}"]

RUN_FILES = sorted([CHECKPOINT, CONFIG, FINAL, METRICS, MANIFEST, LOGIC_COPY, ".lock"])

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- multi-digit task files
@pytest.mark.parametrize("n, prediction", [(2, "exact"), (4, "argmax-concepts")])
def test_multi_digit_task_files_load_and_compile(n, prediction):
    config = load_config(ROOT / "tasks" / f"mnist_addition_n{n}.yaml")
    assert config.logic.params == {"N": n}
    assert Path(config.logic.file).resolve() == LOGIC.resolve()
    assert config.data.train_examples is None  # DeepProbLog's protocol: every image once per epoch
    circuit = build_circuit(config)
    assert len(circuit.concepts) == 2 * n and len(circuit.labels) == n + 1
    assert circuit.compiled.model_count == 10 ** (2 * n)
    assert circuit.prediction_method == prediction


def test_fifteen_digit_addition_compiles():
    config = load_config(ROOT / "tasks" / "mnist_addition_n15.yaml")
    assert config.logic.params == {"N": 15}
    compiled = compile_file(config.logic.file, config.logic.params, use_cache=False)
    assert compiled.model_count == 10**30
    assert len(compiled.knowledge.concepts) == 30 and len(compiled.knowledge.labels) == 16


@pytest.mark.mnist
@pytest.mark.parametrize("n, train_examples, test_examples", [(2, 15000, 2500), (4, 7500, 1250)])
def test_multi_digit_tasks_use_two_n_fresh_images_per_example(mnist_root, n, train_examples, test_examples):
    from nesy_gedi.data.tasks import build_task_data

    config = load_config(ROOT / "tasks" / f"mnist_addition_n{n}.yaml")
    splits = build_task_data(config, build_circuit(config), mnist_root)
    assert len(splits["train"]) == train_examples and len(splits["test"]) == test_examples
    flat = splits["train"].indices.flatten()
    assert len(torch.unique(flat)) == len(flat) == 60000


# ----------------------------------------------------------------------------- torchrun
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_args(out: Path) -> list:
    args = ["train", str(ADDITION), "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    return args


def perception_parameters(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)["weights"]


@pytest.mark.mnist
@pytest.mark.slow
def test_two_gloo_processes_train_like_one_process_with_twice_the_batch(mnist_root, tmp_path):
    out = tmp_path / "ddp"
    result, ranks = run_probe(tmp_path, cli_args(out), mnist_root)  # `python -m nesy_gedi`, recording each rank

    # Both ranks apply the same all-reduced gradients to the same broadcast start.
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    checkpoint = perception_parameters(out)
    for key, value in ranks[0]["state"].items():
        assert torch.allclose(ranks[1]["state"][key], value, rtol=0, atol=1e-6), key
        assert torch.equal(checkpoint[key], value), key

    # Only rank 0 writes: exactly the run files, one final.json, one metrics line per epoch.
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    assert [r["epoch"] for r in read_metrics(out)] == list(range(1, EPOCHS + 1))
    final = json.loads((out / FINAL).read_text())
    assert final["epochs"] == EPOCHS
    assert result.stdout.count("run directory:") == 1

    # The reference: one process, batch 2 x 16 = 32, same examples and permutation.
    config = load_config(ADDITION, TINY + ["train.batch_size=32"])
    single = train(config, tmp_path / "single", data_root=str(mnist_root), device="cpu")
    ddp_state, single_state = perception_parameters(out), perception_parameters(tmp_path / "single")
    assert ddp_state.keys() == single_state.keys()
    for key in single_state:
        assert torch.allclose(ddp_state[key], single_state[key], rtol=0, atol=1e-5), key
    assert final["test_label_accuracy"] == pytest.approx(single["test_label_accuracy"])


PROBE = textwrap.dedent('''
    """`python -m nesy_gedi`, recording each rank's final parameters at teardown; with NAN_RANK set,
    that rank's loss is NaN on its NAN_CALL-th batch (a non-finite step on one rank only)."""
    import os
    import sys

    import torch

    from nesy_gedi import cli, distributed, engine

    seen = {}
    wrap, teardown, forward = distributed.wrap, distributed.teardown, engine._Step.forward
    calls = {"n": 0}

    def recording_wrap(module, state, *args):
        seen["module"] = module.model
        return wrap(module, state, *args)

    def recording_teardown(state):
        if "module" in seen:
            state_dict = {k: v.detach().cpu().clone() for k, v in seen["module"].state_dict().items()}
            torch.save({"rank": state.rank, "world_size": state.world_size, "state": state_dict},
                       os.path.join(os.environ["PROBE_DIR"], f"rank{state.rank}.pt"))
        teardown(state)

    def nan_on_one_rank(self, *args):
        terms = forward(self, *args)
        calls["n"] += 1
        if os.environ.get("RANK") == os.environ.get("NAN_RANK") and calls["n"] == int(os.environ["NAN_CALL"]):
            terms["total"] = terms["total"] * float("nan")
        return terms

    distributed.wrap = recording_wrap
    distributed.teardown = recording_teardown
    if "NAN_RANK" in os.environ:
        engine._Step.forward = nan_on_one_rank
    sys.exit(cli.main(sys.argv[1:]))
''')


# ----------------------------------------------------------------------------- pretrain and failures
MOONS = ROOT / "tasks" / "gedi_moons.yaml"
MOONS_TINY = ["data.toy_samples=400", "train.epochs=3", "train.batch_size=50", "gedi.sgld.buffer_size=200",
              "gedi.sgld.steps=3", "train.num_threads=1", "train.progress=false"]


def moons_args(out: Path, extra=()) -> list:
    args = ["pretrain", str(MOONS), "--out", str(out)]
    for item in [*MOONS_TINY, *extra]:
        args += ["--set", item]
    return args


def run_probe(tmp_path: Path, args: list, mnist_root: Path, env: dict | None = None, expect_rc: int = 0):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir(exist_ok=True)
    launcher = tmp_path / "launch_probe.py"
    launcher.write_text(PROBE)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(launcher), *args]
    full_env = dict(os.environ, NESY_GEDI_DATA=str(mnist_root), NESY_GEDI_CACHE=str(tmp_path / "circuits"),
                    CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PROBE_DIR=str(probe_dir), **(env or {}))
    try:
        result = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun hung: {' '.join(command)}")
    assert result.returncode == expect_rc, f"rc {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    ranks = [torch.load(probe_dir / f"rank{r}.pt") for r in (0, 1) if (probe_dir / f"rank{r}.pt").exists()]
    return result, ranks


@pytest.mark.slow
def test_two_process_pretrain_skips_a_nonfinite_step_on_both_and_matches_one_process(mnist_root, tmp_path):
    # One torchrun run checks both: rank 1's loss is NaN on its second step.
    out = tmp_path / "ddp"
    _, ranks = run_probe(tmp_path, moons_args(out), mnist_root, {"NAN_RANK": "1", "NAN_CALL": "2"})
    assert len(ranks) == 2
    for key, value in ranks[0]["state"].items():  # neither rank stepped alone: the weights agree
        assert torch.allclose(ranks[1]["state"][key], value, rtol=0, atol=1e-6), key
    [event] = [r for r in read_metrics(out) if r.get("event") == "nonfinite"]
    assert event["epoch"] == 1 and event["step"] == 2 and event["action"] == "reset buffer, skip step"
    epochs = [r for r in read_metrics(out) if "event" not in r]
    assert [r["skipped_steps"] for r in epochs] == [1, 0, 0]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == sorted(
        [CHECKPOINT, CONFIG, FINAL, METRICS, MANIFEST, ".lock"])
    ddp = json.loads((out / FINAL).read_text())
    # One process at twice the batch sees the same examples per step (one of the 12 steps
    # skipped there); SGLD chains differ per rank.
    single = pretrain(load_config(MOONS, MOONS_TINY + ["train.batch_size=100"]), tmp_path / "single")
    assert abs(ddp["nmi"] - single["nmi"]) < 0.25 and abs(ddp["cluster_accuracy"] - single["cluster_accuracy"]) < 0.1


@pytest.mark.mnist
@pytest.mark.slow
def test_a_nonfinite_train_step_on_one_rank_stops_both_without_hanging(mnist_root, tmp_path):
    # The ranks agree to stop and exit with the CLI's status 2 (torchrun ends any rank still
    # running once one has exited, and reports its own failure, 1); the timeout catches a hang.
    result, _ = run_probe(tmp_path, cli_args(tmp_path / "ddp"), mnist_root, {"NAN_RANK": "1", "NAN_CALL": "3"},
                          expect_rc=1)
    output = result.stdout + result.stderr
    assert "nesy-gedi: error: training stopped: non-finite values at epoch 2, step 1" in output, output
    assert "exitcode  : 2" in output and 'nesy_gedi/engine.py", line' not in output  # no traceback of ours
    assert load_checkpoint(tmp_path / "ddp")["epoch"] == 1
