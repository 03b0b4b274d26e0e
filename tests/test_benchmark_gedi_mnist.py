"""benchmarks/gedi_mnist.py end to end on a few real MNIST images: result files, their
figures, per-class OOD AUROC rows, and merging seeds run as separate jobs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[1]
TINY = ["--methods", "gedi", "--seeds", "1", "--epochs", "1", "--train-images", "128", "--test-images", "200",
        "--threads", "1", "--set", "train.batch_size=32", "--set", "gedi.sgld.steps=2",
        "--set", "gedi.sgld.buffer_size=64"]


@pytest.mark.mnist
def test_each_result_file_keeps_its_own_figures_and_seed_jobs_merge(mnist_root, tmp_path):
    torch.set_num_threads(1)
    benchmark = load_benchmark("gedi_mnist")
    has_fashion = (Path(mnist_root) / "FashionMNIST" / "raw").is_dir()
    common = TINY + ["--data-root", str(mnist_root)]

    first = benchmark.main(common + ["--out", str(tmp_path / "first.json")])
    second = benchmark.main(common + ["--first-seed", "1", "--out", str(tmp_path / "second.json")])

    # Seed 0's figures are named after the result file, so two result files in one folder
    # never overwrite each other's pictures.
    assert [Path(f).name for f in first["figures"]] == ["first_gedi_samples.png", "first_gedi_energies.png"]
    for figure in first["figures"]:
        assert Path(figure).stat().st_size > 1000
    assert second["figures"] == []  # only seed 0 is drawn
    row = first["runs"][0]
    assert row["seed"] == 0 and row["epochs"] == 1 and "error" not in row
    if has_fashion:
        by_class = row["ood_auroc_by_class"]
        assert len(by_class) == 10 and all(0.0 <= value <= 1.0 for value in by_class.values())

    merged = benchmark.main(["--merge", str(tmp_path / "first.json"), str(tmp_path / "second.json"),
                             "--out", str(tmp_path / "merged.json")])
    assert merged["settings"]["seeds"] == [0, 1]
    assert [run["seed"] for run in merged["runs"]] == [0, 1]
    assert merged["figures"] == first["figures"]
    accuracies = [first["runs"][0]["cluster_accuracy"], second["runs"][0]["cluster_accuracy"]]
    assert merged["summary"]["gedi"]["cluster_accuracy"]["values"] == accuracies
    assert json.loads((tmp_path / "merged.json").read_text()) == merged

    # A part run with another setting is refused, naming the file.
    other = dict(second, settings=dict(second["settings"], overrides=second["settings"]["overrides"] + ["gedi.prior=1"]))
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other.json: other task or settings"):
        benchmark.main(["--merge", str(tmp_path / "first.json"), str(tmp_path / "other.json"),
                        "--out", str(tmp_path / "refused.json")])
    assert not (tmp_path / "refused.json").exists()

