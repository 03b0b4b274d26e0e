"""benchmarks/shortcuts.py's plan files: which runs a plan asks for, the errors a bad plan
gets, and the shared store of pretrainings; then a tiny plan end to end on real MNIST."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmark_modules import load_benchmark
from nesy_gedi.errors import NesyError

REPO = Path(__file__).resolve().parents[1]
benchmark = load_benchmark("shortcuts")


def _plan(tmp_path: Path, plan: dict) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_a_plan_expands_rows_in_order_each_run_once(tmp_path):
    plan = {"variants": {"labelled": ["train.epochs=1"]},
            "rows": [{"task": "evenodd", "modes": ["sl"], "concept_labels": [0, 1], "seeds": 2},
                     {"task": "evenodd", "modes": ["sl"], "concept_labels": [1], "seeds": [0, 1, 2]},
                     {"task": "carry", "modes": ["sl", "sl+entropy"], "variants": ["", "labelled"], "seeds": 1,
                      "set": ["train.lr=0.01"]}]}
    jobs = benchmark.jobs_from_plan(_plan(tmp_path, plan))
    described = [(j.task.stem, j.mode, j.variant_name, j.concept_labels, j.seed) for j in jobs]
    assert described == [
        ("mnist_evenodd", "sl", "", 0, 0), ("mnist_evenodd", "sl", "", 0, 1),
        ("mnist_evenodd", "sl", "", 1, 0), ("mnist_evenodd", "sl", "", 1, 1),
        ("mnist_evenodd", "sl", "", 1, 2),  # seeds 0 and 1 of K=1 were already asked for
        ("mnist_carry", "sl", "", 0, 0), ("mnist_carry", "sl", "labelled", 0, 0),
        ("mnist_carry", "sl+entropy", "", 0, 0), ("mnist_carry", "sl+entropy", "labelled", 0, 0)]
    assert jobs[-1].variant == ("train.epochs=1",) and jobs[-1].overrides == ("train.lr=0.01",)


@pytest.mark.parametrize("plan, message", [
    ({"rows": {"task": "evenodd"}}, "expected a mapping with a list under 'rows'"),
    ({"rows": [{"modes": ["sl"]}]}, "rows[0]: expected a mapping with a 'task'"),
    ({"rows": [{"task": "evenodd", "mode": ["sl"]}]}, "rows[0].mode: unknown key"),
    ({"rows": [{"task": "evenodd", "modes": ["sl+magic"]}]}, "rows[0].modes: unknown mode 'sl+magic'"),
    ({"rows": [{"task": "evenodd", "variants": ["pretrained"]}]}, "'pretrained' is not defined under 'variants'"),
    ({"variants": {"x": "train.lr=1"}, "rows": []}, "variants.x: expected a list of KEY=VALUE strings"),
    ({"rows": [{"task": "evenodd", "seeds": -1}]}, "rows[0]: seeds (a positive count or a list)"),
    ({"rows": [{"task": "evenodd", "concept_labels": 1}]}, "rows[0]: seeds (a positive count or a list)"),
    ({"rows": [{"task": "nosuchtask"}]}, "unknown task 'nosuchtask'"),
])
def test_a_bad_plan_names_the_file_the_row_and_the_problem(tmp_path, plan, message):
    path = _plan(tmp_path, plan)
    with pytest.raises(NesyError) as error:
        benchmark.jobs_from_plan(path)
    assert message in str(error.value)
    if message.startswith(("expected", "rows", "variants")) or "not defined" in message:
        assert str(path) in str(error.value)


def test_runs_with_a_pretraining_share_the_benchmark_store(tmp_path):
    args = benchmark.parse_args(["--runs-dir", str(tmp_path / "runs")])
    job = benchmark.Job(REPO / "tasks" / "mnist_evenodd.yaml", "sl", "pretrained",
                        ("model.pretrain=tasks/gedi_mnist_nogen.yaml",), 1, 3)
    config = benchmark.run_config(job, args)
    assert Path(config.model.pretrain_dir) == tmp_path / "runs" / "pretrained"
    assert config.train.seed == 3 and config.train.concept_labels == 1
    plain = benchmark.run_config(benchmark.Job(job.task, "sl", "", (), 0, 0), args)
    assert plain.model.pretrain_dir is None  # nothing to share: the plain run's config is untouched

    # The stored config of a finished run names the backbone `train` filled in as model.init;
    # it is still the same run.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stored = config.to_dict()
    stored["model"]["init"] = str(tmp_path / "runs" / "pretrained" / "gedi_mnist_nogen-0123")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert benchmark.same_run_config(run_dir, config)
    # A key the run's mode does not read (a gedi setting of an sl run) leaves it the same run.
    assert config.train.mode == "sl"
    stored["gedi"]["energy_magnitude"] = 0.0 if config.gedi.energy_magnitude else 0.1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert benchmark.same_run_config(run_dir, config)
    stored["train"]["lr"] = 0.5
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert not benchmark.same_run_config(run_dir, config)


@pytest.mark.mnist
def test_a_tiny_plan_end_to_end(mnist_root, tmp_path):
    plan = {"variants": {"labelled": ["train.concept_supervision=0.5"]},
            "rows": [{"task": "evenodd", "modes": ["sl"], "variants": ["", "labelled"], "seeds": 1,
                      "concept_labels": [0, 2],
                      "set": ["data.train_examples=64", "data.test_examples=40", "train.epochs=1"]}]}
    out = tmp_path / "table.json"
    args = ["--plan", str(_plan(tmp_path, plan)), "--data-root", str(mnist_root), "--runs-dir",
            str(tmp_path / "runs"), "--out", str(out)]
    assert benchmark.main(args) == 0
    result = json.loads(out.read_text())
    assert [(r["variant"], r["concept_labels"]) for r in result["table"]] == [("", 0), ("", 2), ("labelled", 0),
                                                                             ("labelled", 2)]
    assert all(r["backbones"] == 0 and r["backbone_cluster_accuracy"] is None for r in result["table"])
    assert result["settings"]["plan_text"] == (tmp_path / "plan.yaml").read_text()
    assert (tmp_path / "table_label_efficiency.png").stat().st_size > 1000
    for run in result["runs"]:
        assert run["concept_nmi"] is not None and run["backbone"] is None
    written = {r["run"]: Path(r["run"], "diagnosis.json").stat().st_mtime_ns for r in result["runs"]}
    assert benchmark.main(args) == 0  # a second call reuses every run
    assert {r: Path(r, "diagnosis.json").stat().st_mtime_ns for r in written} == written

    # Two worker processes train the same runs to the same figures (those without labels, one each).
    plan["rows"][0]["concept_labels"] = [0]
    parallel = tmp_path / "parallel.json"
    assert benchmark.main(["--plan", str(_plan(tmp_path, plan)), *args[2:-4], "--runs-dir",
                           str(tmp_path / "parallel_runs"), "--out", str(parallel), "--workers", "2"]) == 0
    figures = ("variant", "label_accuracy", "concept_accuracy", "concept_nmi", "learned_concept_map")
    assert [{k: r[k] for k in figures} for r in json.loads(parallel.read_text())["runs"]] == \
        [{k: r[k] for k in figures} for r in result["runs"] if r["concept_labels"] == 0]
