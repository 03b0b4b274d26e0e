"""benchmarks/long_addition.py end to end on real MNIST at a tiny size: the rows it writes, the
expected sum accuracy computed from the runs' own digit errors, and runs reused on a rerun."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark
from nesy_gedi.metrics import all_right_probability

benchmark = load_benchmark("long_addition")


def test_batch_keeps_about_480_images_per_step():
    assert [benchmark.batch_size(n) for n in (1, 15, 100, 500, 1000)] == [240, 16, 2, 1, 1]


def test_fewer_seeds_at_one_n():
    args = benchmark.parse_args(["--n", "15", "1000", "--seeds", "3", "--seeds-at", "1000=1"])
    assert sorted(benchmark.jobs(args)) == sorted([("named", 15, 0), ("named", 15, 1), ("named", 15, 2), ("named", 1000, 0),
                                                   ("supervised", 15, 0), ("supervised", 15, 1), ("supervised", 15, 2)])


@pytest.mark.mnist
@pytest.mark.slow
def test_a_tiny_table_end_to_end(tmp_path, mnist_root, capsys):
    out = tmp_path / "long.json"
    argv = ["--n", "3", "--methods", "scratch", "--supervised-n", "--seeds", "2", "--epochs", "1",
            "--runs-dir", str(tmp_path / "runs"), "--data-root", str(mnist_root), "--out", str(out),
            "--set", "data.train_examples=40", "--set", "data.test_examples=30"]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "long_addition"
    (row,) = result["rows"]
    assert (row["N"], row["method_key"], row["seeds"], row["test_sums"]) == (3, "scratch", [0, 1], 30)
    for run in result["runs"]:
        final = json.loads((Path(run["run"]) / "final.json").read_text())
        assert run["sum_accuracy"] == final["test_label_accuracy"]
        assert run["test_images"] == 30 * 6
        assert run["wrong_digits"] == round((1 - final["test_concept_accuracy"]) * 180)
        assert run["expected_sum_accuracy"] == all_right_probability(run["wrong_digits"], 180, 6)
    sums = [run["sum_accuracy"] for run in result["runs"]]
    assert row["sum_accuracy"]["mean"] == pytest.approx(sum(sums) / 2)
    assert {peer["N"] for peer in result["peers"]} >= {15, 100, 500}
    assert "DeepProofLog" in result["markdown"]
    # A rerun reuses the finished runs: their files stay as they were.
    stamps = {run["run"]: (Path(run["run"]) / "final.json").stat().st_mtime_ns for run in result["runs"]}
    assert benchmark.main(argv) == 0
    assert stamps == {run: (Path(run) / "final.json").stat().st_mtime_ns for run in stamps}
    # --report-only trains nothing and names the runs it lacks.
    assert benchmark.main([*argv, "--seeds", "3", "--report-only"]) == 0
    reported = json.loads(out.read_text())
    assert reported["missing"] == ["scratch:3:2"] and reported["rows"][0]["seeds"] == [0, 1]
    assert not (tmp_path / "runs" / "scratch" / "n3" / "seed2").exists()


def test_jobs_in_the_given_order_and_bad_jobs_refused():
    args = benchmark.parse_args(["--jobs", "named:100:1", "supervised:15:0", "named:15:2"])
    assert benchmark.jobs(args) == [("named", 100, 1), ("supervised", 15, 0), ("named", 15, 2)]
    for bad in ("named:100", "guess:15:0", "named:x:0"):
        with pytest.raises(SystemExit, match="expected METHOD:N:SEED"):
            benchmark.jobs(benchmark.parse_args(["--jobs", bad]))
