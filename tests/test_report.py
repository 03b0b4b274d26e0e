"""benchmarks/report.py: the README's results block and docs/results.md are what the stored
results and the templates give, every figure matches its result file, and the long-addition
rows render beside the published peers (from a fixture, whether or not the real file exists)."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "long_addition.json"


report = load_benchmark("report")


def _readme_row(text: str, task: str) -> list[str]:
    """The cells of the README results row whose task cell is `task`."""
    block = text[text.index("<!-- results:begin -->"):text.index("<!-- results:end -->")]
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == task:
            return cells
    raise AssertionError(f"no README row for {task!r}")


def test_readme_and_results_page_are_up_to_date():
    # `python benchmarks/report.py --check` fails exactly when this list is not empty.
    assert report.stale(report.rendered()) == []
    assert report.main(["--check"]) == 0


def test_check_names_a_file_that_differs(tmp_path):
    current, behind = tmp_path / "current.md", tmp_path / "behind.md"
    current.write_text("same\n")
    behind.write_text("old\n")
    assert report.stale({current: "same\n", behind: "new\n", tmp_path / "absent.md": "x"}) == \
        [behind, tmp_path / "absent.md"]


def test_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_every_placeholder_is_filled():
    files = report.rendered()
    block = report.render_readme_block()
    for text in (block, files[report.NOTEBOOK]):
        assert re.search(r"\$\{?[a-z_]+", text) is None
    assert block in files[report.README]


def test_a_placeholder_without_a_value_is_an_error_naming_it(tmp_path):
    template = tmp_path / "t.md.in"
    template.write_text("figure: $figure, cost: $$3\n")
    assert report.fill(template, {"figure": "1.5"}) == "figure: 1.5, cost: $3\n"
    with pytest.raises(SystemExit, match=r"t\.md\.in: no value for the placeholder \$figure"):
        report.fill(template, {})


@pytest.mark.parametrize("n", [1, 2, 4, 15])
def test_addition_rows_match_the_runs(n):
    data = json.loads((REPO / "benchmarks" / "results" / f"addition_n{n}.json").read_text())
    last = [run["epochs"][-1]["sum_accuracy"] for run in data["runs"]]
    epochs = len(data["runs"][0]["epochs"])
    cells = _readme_row((REPO / "README.md").read_text(), f"MNIST-addition N={n}, {epochs} epochs")
    mean, std = map(float, re.match(r"([\d.]+) ± ([\d.]+) \((\d+) seeds\)", cells[3]).groups()[:2])
    assert mean == pytest.approx(100 * statistics.fmean(last), abs=0.006)
    assert std == pytest.approx(100 * statistics.stdev(last), abs=0.006)
    # † exactly on the rows measured before the engine rewrite; ‡ on the N=15 row (chosen on seed 0).
    old = str(data["machine"]["date"])[:10] < report.ENGINE_REWRITE
    assert ("†" in cells[3]) == old
    assert ("‡" in cells[3]) == (n == 15)
    published = report.published()["addition"][n]
    assert all(f"{entry['accuracy']} ({entry['system']})" in cells[2] for entry in published)


def test_n15_fresh_seeds_leave_out_the_seed_that_chose_the_settings():
    data = json.loads((REPO / "benchmarks" / "results" / "addition_n15.json").read_text())
    fresh = [run["epochs"][-1]["sum_accuracy"] for run in data["runs"] if run["seed"] != 0]
    assert len(fresh) == 2
    assert report.n15_fresh_seeds() == f"{100 * sum(fresh) / 2:.2f}"
    assert f"alone: {report.n15_fresh_seeds()}" in report.render_readme_block().replace("\n", " ")


def test_long_addition_rows_stand_beside_the_published_peers():
    data = json.loads(FIXTURE.read_text())
    rows = report.long_addition_rows(data, report.published())
    # One row per N and method; each N's supervised ceiling joins its method's row, or stands alone.
    assert [row[0] for row in rows] == ["MNIST-addition N=15, no-gen backbone, named + semantic loss",
                                        "MNIST-addition N=100, no-gen backbone, named + semantic loss",
                                        "MNIST-addition N=200, supervised (all digit labels)"]
    n15, n100, n200 = rows
    assert n15[1] == "sum accuracy, % (333 test sums)"
    assert n15[2] == ("80.8 ± 1.1 in 42 min (DeepProofLog, AAAI 2026, Table 1); 76.84 in 917 min (A-NeSI); "
                      "77.1 (DeepSoftLog); time-out (Scallop, DeepStochLog)")
    assert n15[3] == ("81.2 ± 1.4 (3 seeds, 20 epochs, 1.2 min; digits 99.31 ± 0.04; expected from its digits "
                      "81.4 [80.1, 82.6]; all digits labelled: 84.1 ± 0.9)")
    assert n100[2] == "37.8 ± 2.9 in 106 min (DeepProofLog)"
    assert n100[3] == ("42.0 ± 2.0 (3 seeds, 20 epochs, 3.5 min; digits 99.60 ± 0.03; expected from its digits "
                       "44.0 [40.0, 47.0]; all digits labelled: 46.0 ± 3.0)")
    assert n200[2] == "23.2 (DeepProofLog)"
    assert n200[3] == "24.0 ± 4.0 (3 seeds, 20 epochs, 6.0 min; digits 99.66 ± 0.01)"


def test_readme_shows_long_addition_only_when_its_file_exists(monkeypatch):
    real = report.load
    absent = report.render_readme_block()
    if real("long_addition") is None:
        assert "DeepProofLog" not in absent and "long addition: `" not in absent
    monkeypatch.setattr(report, "load", lambda name, folder=None:
                        json.loads(FIXTURE.read_text()) if name == "long_addition" else real(name, folder))
    block = report.render_readme_block()
    addition = block[:block.index("### GEDI")]
    assert "| MNIST-addition N=100, no-gen backbone, named + semantic loss | sum accuracy, % (50 test sums) |" \
        in addition
    assert "long addition: `python benchmarks/long_addition.py --n 15 100 200 --seeds 3`" in addition
    assert "Scallop and DeepStochLog time out at N=15" in addition.replace("\n", " ")
    # The fixture's machine joins the table's hardware line.
    assert "Hardware: 2-core CPU, 1 torch thread; 16-core CPU, 1 torch thread." in addition
    readme = report.with_block((REPO / "README.md").read_text(), block)
    assert len(readme.splitlines()) <= 250
    # docs/results.md keeps every row, the ceilings included.
    notebook = report.notebook_long_addition()
    ceiling = ("| 100 | supervised (all digit labels) | 3 | 20 | 46.0 ± 3.0 | – | 99.65 ± 0.02 | 3.0 ± 0.1 "
               "| 1 | 50 |")
    assert ceiling in notebook
    assert "| 100 | no-gen backbone, named + semantic loss | 3 | 20 | 42.0 ± 2.0 | 44.0 [40.0, 47.0] |" in notebook
