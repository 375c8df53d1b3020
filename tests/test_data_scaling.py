"""benchmarks/data_scaling.py: train.py runs on parts of the training split, read back into a figure and tables."""
import json

import pytest

from benchmarks import data_scaling
from conftest import TINY_TRAIN


@pytest.mark.slow
def test_runs_each_size_and_seed_then_writes_the_figure_and_tables(tmp_path, capsys):
    logs, out = tmp_path / "logs", tmp_path / "figs" / "scaling"
    argv = ["--preset", "none", "--sizes", "20", "40", "--seeds", "0", "1", "--jobs", "2", "--threads", "1",
            "--logs_dir", str(logs), "--out", str(out), "--", *TINY_TRAIN, "--epochs", "2"]
    assert data_scaling.main(argv) == 0, capsys.readouterr()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.with_suffix(".json").read_text())
    runs = {(r["size"], r["seed"]): r for r in report["runs"]}
    assert set(runs) == {(20, 0), (20, 1), (40, 0), (40, 1)}
    for (size, seed), r in runs.items():
        config = json.loads((logs / f"n{size}_s{seed}" / "config.json").read_text())
        assert config["args"]["train_size"] == size and config["args"]["seed"] == seed
        assert r["train_images"] == size and r["finished"] and r["epochs"] == 2
        rows = [json.loads(line) for line in (logs / f"n{size}_s{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert r["test_acc"] == rows[-1]["test_acc"] and 0.0 <= r["test_acc"] <= 1.0
    points = {p["size"]: p for p in report["points"]}
    assert points[40]["n"] == 2
    assert points[40]["mean"] == pytest.approx((runs[(40, 0)]["test_acc"] + runs[(40, 1)]["test_acc"]) / 2)
    table = out.with_suffix(".md").read_text()
    assert "| 40 | 2 | **" in table and table.count("| yes |") == 4

    # finished runs are read again, not repeated
    before = (logs / "n20_s0" / "metrics.jsonl").stat().st_mtime_ns
    assert data_scaling.main(argv) == 0
    assert (logs / "n20_s0" / "metrics.jsonl").stat().st_mtime_ns == before
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == report["runs"]


def test_flags_the_script_sets_are_refused(capsys):
    with pytest.raises(SystemExit):
        data_scaling.parse_args(["--", "--train_size", "10"])
    assert "--train_size is set by the script" in capsys.readouterr().err


def test_report_without_runs_is_one_line(tmp_path, capsys):
    assert data_scaling.main(["--report_only", "--logs_dir", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "no run under" in capsys.readouterr().err
