"""visualize_results.py and visualize_attention.py on synthetic run directories (written with the rundir writer):
an image run, a permuted-pixel image run, a point-cloud run, a run still training and broken runs.
No torch, no training; small figures (low dpi) to stay fast."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):  # the scripts live at the repository root; shared helpers beside this file
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402

import visualize_attention  # noqa: E402
import visualize_results  # noqa: E402
from perceiver.rundir import RunDir, append_jsonl  # noqa: E402
from perceiver.viz import synthetic  # noqa: E402
from perceiver.viz.training_metrics import compute_metrics  # noqa: E402

DPI = ["--dpi", "40"]
SMALL = dict(latents=6, samples=2, points=128, size=12)


def assert_png(path: Path, min_kb: float = 8.0) -> None:
    """The file exists, is not tiny, and the picture is not blank (varied pixels, not all white)."""
    assert path.exists(), f"{path} was not written"
    assert path.stat().st_size > min_kb * 1024, f"{path} is only {path.stat().st_size} bytes"
    img = mpimg.imread(str(path))[..., :3]
    assert img.std() > 0.05, f"{path} looks blank"
    assert (img.min(-1) < 0.9).mean() > 0.02, f"{path} is almost all white"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    return {
        "root": root,
        "image": synthetic.make_run(root / "image", kind="image", epochs=12, attention_epochs=(1, 6, 12), **SMALL),
        "permuted": synthetic.make_run(root / "permuted", kind="image", epochs=3, attention_epochs=(1, 3),
                                       permuted=True, **SMALL),
        "points": synthetic.make_run(root / "points", kind="pointcloud", epochs=4, attention_epochs=(2, 4), **SMALL),
    }


def test_dashboard_and_metrics_json(runs, capsys):
    run = runs["image"]
    rc = visualize_results.cli(["--output_dir", str(run.path), "--experiment_name", "Esperimento_Principale",
                                "--enhanced_attention", "--epochs", "1", "12", "99", *DPI])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "epoch(s) 99" in err  # the missing attention epoch is named, the others drawn
    assert_png(run.plots_dir / "training_dashboard.png", min_kb=20)
    report = json.loads((run.plots_dir / "training_metrics.json").read_text())
    expected = compute_metrics(run.read_metrics())
    assert report["experiment"] == "Esperimento_Principale"
    assert report["attention_epochs"] == [1, 12]
    for key, value in expected["metrics"].items():
        assert report["metrics"][key] == pytest.approx(value)
    assert report["state"]["label"] in ("converged", "converging", "diverging")
    assert report["best"]["test_acc"]["epoch"] == expected["best"]["test_acc"]["epoch"]


def test_dashboard_metrics_json_matches_hand_values(tmp_path):
    from test_viz_metrics import HAND_STABILITY, KNOWN_ROWS

    run = RunDir(tmp_path / "known")
    run.create()
    for row in KNOWN_ROWS:  # hand-made rows with only the fields the metrics read
        append_jsonl(run.metrics_path, row)
    assert visualize_results.cli(["--output_dir", str(run.path), *DPI]) == 0
    report = json.loads((run.plots_dir / "training_metrics.json").read_text())
    assert report["metrics"]["stability"] == pytest.approx(HAND_STABILITY)
    assert report["metrics"]["convergence"] == pytest.approx(0.95)
    assert report["metrics"]["generalization"] == pytest.approx(0.8)
    assert report["metrics"]["improvement"] == pytest.approx(0.2)
    assert report["metrics"]["overfitting"] == pytest.approx(0.2)
    assert report["gap"]["diagnosis"] == "overfitting"
    assert_png(run.plots_dir / "training_dashboard.png")


def test_attention_image_run_with_evolution_and_self_attention(runs, tmp_path):
    run = runs["image"]
    out = tmp_path / "figs"
    rc = visualize_attention.cli(["--logs_dir", str(run.path), "--output_dir", str(out), "--colormap", "plasma",
                                  "--alpha", "0.7", "--create_evolution", "--epoch", "1", "12", *DPI])
    assert rc == 0
    for name in ("comprehensive_epoch_1_analysis.png", "comprehensive_epoch_12_analysis.png",
                 "attention_evolution_analysis.png"):
        assert_png(out / name)
    assert not (out / "comprehensive_epoch_6_analysis.png").exists()
    rc = visualize_attention.cli(["--logs_dir", str(run.path), "--output_dir", str(out), "--attention", "self",
                                  "--epoch", "12", "--head", "0", "--latent", "mean", *DPI])
    assert rc == 0
    assert_png(out / "comprehensive_epoch_12_self_analysis.png")


def test_attention_permuted_and_point_cloud_runs_default_to_plots(runs):
    for name, epochs in (("permuted", (1, 3)), ("points", (2, 4))):
        run = runs[name]
        assert visualize_attention.cli(["--logs_dir", str(run.path), "--create_evolution", *DPI]) == 0
        for e in epochs:
            assert_png(run.plots_dir / f"comprehensive_epoch_{e}_analysis.png")
        assert_png(run.plots_dir / "attention_evolution_analysis.png")


def test_root_with_several_runs_skips_the_broken_one(runs, tmp_path, capsys):
    root = tmp_path / "logs"
    for name in ("a", "b"):
        synthetic.make_run(root / name, kind="image", epochs=2, attention_epochs=(), **SMALL)
    broken = RunDir(root / "broken")
    broken.create()
    broken.write_config({"args": {}})  # started, no epoch finished yet
    out = tmp_path / "out"
    assert visualize_results.cli(["--output_dir", str(root), "--save_dir", str(out), *DPI]) == 0
    err = capsys.readouterr().err
    assert "broken" in err and "metrics.jsonl" in err and "python train.py" in err
    assert len(err.strip().splitlines()) == 1
    for name in ("a", "b"):
        assert_png(out / name / "training_dashboard.png")
    # attention: none of these runs saved any -> nothing to draw -> exit 1, one line, no traceback
    assert visualize_attention.cli(["--logs_dir", str(root / "a"), *DPI]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--save_attention_maps" in err and len(err.splitlines()) == 1


def test_run_in_progress_and_torn_last_line(tmp_path):
    run = synthetic.make_run(tmp_path / "live", kind="image", epochs=3, attention_epochs=(1,), state="running",
                             **SMALL)
    run.write_status("running", epoch=3, epochs=50)
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 4, "train_acc": 0.')  # a crash mid-append
    assert visualize_results.cli(["--output_dir", str(run.path), "--enhanced_attention", *DPI]) == 0
    report = json.loads((run.plots_dir / "training_metrics.json").read_text())
    assert report["epochs_completed"] == 3 and report["run_status"]["state"] == "running"
    assert_png(run.plots_dir / "training_dashboard.png")


def test_single_epoch_run(tmp_path):
    run = synthetic.make_run(tmp_path / "one", kind="pointcloud", epochs=1, attention_epochs=(1,), **SMALL)
    assert visualize_results.cli(["--output_dir", str(run.path), "--enhanced_attention", *DPI]) == 0
    report = json.loads((run.plots_dir / "training_metrics.json").read_text())
    assert report["metrics"]["stability"] is None and report["state"]["label"] == "undetermined"
    assert_png(run.plots_dir / "training_dashboard.png")


def test_user_errors_give_one_line(runs, tmp_path, capsys):
    assert visualize_results.cli(["--output_dir", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert visualize_attention.cli(["--logs_dir", str(empty)]) == 1
    assert "holds no training run" in capsys.readouterr().err
    assert visualize_attention.cli(["--logs_dir", str(runs["image"].path), "--sample", "9", *DPI]) == 1
    err = capsys.readouterr().err.strip()
    assert "--sample 9 is out of range" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        visualize_attention.cli(["--colormap", "rainbow"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        visualize_results.cli(["--alpha", "3"])
    assert e.value.code == 2


def _val_run(path, val_accs, train_accs, last_samples=400):
    """A run trained with a validation split: hand-made rows whose val and test accuracies differ; its last epoch
    was cut short after ``last_samples`` of 1000 images."""
    run = RunDir(path)
    run.create()
    for i, (val, train) in enumerate(zip(val_accs, train_accs), start=1):
        append_jsonl(run.metrics_path, {"epoch": i, "train_acc": train, "val_acc": val, "test_acc": val - 0.2,
                                        "elapsed_s": 120.0 * i, "samples_per_s": 500.0 + i,
                                        "train_samples": 1000 if i < len(val_accs) else last_samples})
    return run


def test_compare_draws_several_runs_on_one_figure(runs, tmp_path, capsys):
    val = _val_run(tmp_path / "more" / "image", [0.3, 0.5, 0.45], [0.2, 0.6, 0.7])  # same folder name as a run
    out = tmp_path / "cmp"
    rc = visualize_results.cli(["--compare", str(runs["image"].path), str(runs["points"].path), str(val.path),
                                str(runs["image"].path), "--save_dir", str(out), *DPI])
    assert rc == 0
    assert_png(out / "runs_comparison.png", min_kb=15)
    report = json.loads((out / "runs_comparison.json").read_text())
    by_dir = {Path(r["run_dir"]).resolve(): r for r in report["runs"]}
    assert len(report["runs"]) == 3  # a run named twice is drawn once
    image = by_dir[runs["image"].path.resolve()]
    rows = runs["image"].read_metrics()
    assert image["held_out"] == "test" and image["last_epoch"] == image["epochs"] == len(rows) == 12
    assert image["last_acc"] == pytest.approx(rows[-1]["test_acc"])
    assert image["best_acc"] == pytest.approx(max(r["test_acc"] for r in rows))
    mine = by_dir[val.path.resolve()]
    assert mine["held_out"] == "val"  # the validation accuracy, not the test accuracy, of a split run
    assert (mine["last_acc"], mine["best_acc"], mine["best_epoch"]) == (0.45, 0.5, 2)
    assert mine["last_train_acc"] == 0.7 and mine["samples_per_s"] == pytest.approx(502.0)
    assert (mine["last_epoch"], mine["epochs"]) == (3, 2.4)  # the last epoch trained on 400 of 1000 images
    assert {r["run"] for r in report["runs"]} == {f"{runs['root'].name}/image", "more/image", "points"}


def test_compare_leaves_out_the_training_accuracy_of_a_sliver_of_an_epoch(tmp_path):
    root = tmp_path / "logs"
    _val_run(root / "a", [0.3, 0.4, 0.41], [0.3, 0.5, 0.9], last_samples=20)  # 2 % of an epoch: 0.9 means little
    _val_run(root / "b", [0.3, 0.4], [0.3, 0.5])
    assert visualize_results.cli(["--run_dir", str(root), "--compare", *DPI]) == 0
    a = json.loads((root / "runs_comparison.json").read_text())["runs"][0]
    assert (a["run"], a["epochs"], a["last_acc"], a["last_train_acc"]) == ("a", 2.0, 0.41, 0.5)


def test_compare_with_no_runs_named_reads_run_dir_and_writes_beside_the_runs(tmp_path):
    root = tmp_path / "logs"
    _val_run(root / "a", [0.3, 0.4], [0.3, 0.5])
    _val_run(root / "b", [0.35, 0.45], [0.3, 0.6])
    assert visualize_results.cli(["--run_dir", str(root), "--compare", *DPI]) == 0
    assert_png(root / "runs_comparison.png")
    assert not (root / "a" / "plots").exists()  # no dashboards


def test_compare_errors(runs, tmp_path, capsys):
    for argv, words in ((["--compare", "--enhanced_attention"], "--compare draws accuracy curves only"),
                        (["--compare", "x", "--run_dir", "y"], "not both")):
        with pytest.raises(SystemExit) as e:
            visualize_results.cli(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert visualize_results.cli(["--compare", str(runs["image"].path), "--save_dir", str(tmp_path), *DPI]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "at least two runs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs_comparison.png").exists()


def test_script_entry_point_exit_code_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "visualize_attention.py"), "--logs_dir",
                           str(tmp_path / "missing")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_default_scans_logs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert visualize_results.cli([]) == 1
    assert "no logs/ folder" in capsys.readouterr().err
    synthetic.make_run(tmp_path / "logs" / "r", kind="image", epochs=2, attention_epochs=(2,), **SMALL)
    assert visualize_attention.cli(DPI) == 0
    assert_png(tmp_path / "logs" / "r" / "plots" / "comprehensive_epoch_2_analysis.png")


# ------------------------------------------------------------------------------------- command-line consistency


def _scripts():
    import demo_visualizations

    return {"visualize_results": visualize_results, "visualize_attention": visualize_attention,
            "demo_visualizations": demo_visualizations}


@pytest.mark.parametrize("name", ["visualize_results", "visualize_attention", "demo_visualizations"])
def test_help_states_each_default_once(name, capsys):
    module = _scripts()[name]
    parser = module.build_parser()
    formatter = parser.formatter_class(prog=name)
    for action in parser._actions:
        if action.help and action.dest != "help":
            text = formatter._expand_help(action)
            assert text.count("(default") == 1, f"{action.option_strings}: {text}"
    with pytest.raises(SystemExit) as e:
        module.cli(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in out and "['" not in out
    assert "--run_dir RUN" in out and "--save_dir DIR" in out


@pytest.mark.parametrize("name, read, write", [
    ("visualize_results", "--output_dir", "--save_dir"),
    ("visualize_attention", "--logs_dir", "--output_dir"),
    ("demo_visualizations", "--logs_dir", "--output_dir"),
])
def test_run_dir_and_save_dir_name_the_same_things_in_every_script(name, read, write):
    parser = _scripts()[name].build_parser()
    spec = parser.parse_args([read, "logs/a", write, "out"])
    alias = parser.parse_args(["--run_dir", "logs/a", "--save_dir", "out"])
    assert vars(spec) == vars(alias)


def test_aliases_draw_like_the_specification_flags(runs, tmp_path):
    run = runs["image"]
    assert visualize_results.cli(["--run_dir", str(run.path), "--save_dir", str(tmp_path / "r"), *DPI]) == 0
    assert_png(tmp_path / "r" / "training_dashboard.png")
    assert visualize_attention.cli(["--run_dir", str(run.path), "--save_dir", str(tmp_path / "a"), "--epoch", "12",
                                    *DPI]) == 0
    assert_png(tmp_path / "a" / "comprehensive_epoch_12_analysis.png")


@pytest.mark.parametrize("name", ["visualize_results", "visualize_attention", "demo_visualizations"])
def test_bad_flags_are_one_line_with_exit_2(name, capsys):
    for argv in (["--bogus"], ["--alpha", "nan?"], ["--colormap", "rainbow"]):
        with pytest.raises(SystemExit) as e:
            _scripts()[name].cli(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error:" in err and "(see --help)" in err, err
