"""The visualizers on damaged runs. A truncated or random-bytes attention file, a corrupt line in
the middle of metrics.jsonl or a torn last line is skipped with one warning line naming it; everything else is
drawn and the script exits 0; never a traceback. The trainer, which rewrites metrics.jsonl on --resume, refuses
a damaged middle line instead (dropping it would lose that epoch's row for good)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import demo_visualizations  # noqa: E402
import visualize_attention  # noqa: E402
import visualize_results  # noqa: E402
from perceiver.errors import DamagedFileError  # noqa: E402
from perceiver.rundir import RunDir, load_attention, read_jsonl  # noqa: E402
from perceiver.viz import synthetic  # noqa: E402
from test_viz_scripts import SMALL, assert_png  # noqa: E402

EPOCHS = 6
ATTENTION = (1, 3, 6)


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rewrite_arrays(path: Path, **edits) -> None:
    """Rewrite an attention file with some arrays changed: ``name=lambda array: new_array``."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for name, edit in edits.items():
        arrays[name] = edit(arrays[name])
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def damage(run: RunDir, kind: str, epoch: int = 3) -> str:
    """Damage one file of ``run``; returns the start of the warning it must cause."""
    if kind == "truncated_npz":
        cut_in_half(run.attention_path(epoch))
        return f"warning: skipped {run.attention_path(epoch)} (not a readable attention file: BadZipFile"
    if kind == "random_npz":
        run.attention_path(epoch).write_bytes(np.random.default_rng(0).bytes(5000))
        return f"warning: skipped {run.attention_path(epoch)} (not a readable attention file: not an .npz archive"
    if kind == "misfit_npz":  # readable, but its maps cover 100 positions of a 12x12 image
        rewrite_arrays(run.attention_path(epoch), cross=lambda a: a[..., :100])
        return (f"warning: skipped {run.attention_path(epoch)} (its arrays do not fit together: cross-attention over "
                f"100 positions for a 12x12 image (144 pixels))")
    if kind == "other_run_npz":  # consistent in itself, but written by a run with 4 latents where this one has 6
        run.save_attention(synthetic.make_snapshot("image", epoch, EPOCHS, **{**SMALL, "latents": 4}))
        return (f"warning: skipped {run.attention_path(epoch)} (it does not fit this run: latents 4 where the run "
                f"has 6 (config.json))")
    lines = run.metrics_path.read_text().splitlines(keepends=True)
    if kind == "corrupt_middle_line":
        lines[2] = '{"epoch": 3, "train_loss": 1.2\x00\x00\x00garbage\n'
        run.metrics_path.write_text("".join(lines))
        return f"warning: skipped line 3 of {run.metrics_path} (not valid JSON)"
    assert kind == "torn_last_line"
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a crash in the middle of the last append
    run.metrics_path.write_text("".join(lines))
    return f"warning: skipped line {EPOCHS} of {run.metrics_path} (an incomplete last line"


def script_args(script: str, run: RunDir) -> list[str]:
    if script == "visualize_results":
        return ["--output_dir", str(run.path), "--enhanced_attention", "--dpi", "40"]
    if script == "visualize_attention":
        return ["--logs_dir", str(run.path), "--create_evolution", "--dpi", "40"]
    if script == "explorer":
        return ["--logs_dir", str(run.path), "--html"]
    return ["--logs_dir", str(run.path), "--formats", "png", "--dpi", "40", "--alphas", "0.5", "1.0"]


CLI = {"visualize_results": visualize_results.cli, "visualize_attention": visualize_attention.cli,
       "demo_visualizations": demo_visualizations.cli, "explorer": visualize_attention.cli}  # explorer: --html
READS = {"visualize_results": {"npz", "jsonl"}, "visualize_attention": {"npz"},
         "demo_visualizations": {"npz", "jsonl"}, "explorer": {"npz", "jsonl"}}


CASES = [pytest.param(script, kind, marks=[pytest.mark.slow] if script == "demo_visualizations" and
                      kind != "truncated_npz" else [])  # the demo draws every figure: ~10 s a case
         for script in CLI for kind in ("truncated_npz", "random_npz", "misfit_npz", "other_run_npz",
                                        "corrupt_middle_line", "torn_last_line")]


@pytest.mark.parametrize("script,kind", CASES)
def test_damaged_file_is_skipped_with_one_warning_and_the_rest_drawn(tmp_path, capsys, script, kind):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=EPOCHS, attention_epochs=ATTENTION, **SMALL)
    warning = damage(run, kind)
    assert CLI[script](script_args(script, run)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    if kind.split("_")[-1] in READS[script] or (kind.endswith("line") and "jsonl" in READS[script]):
        assert len(err) == 1 and err[0].startswith(warning), err
    else:
        assert err == []  # visualize_attention does not read metrics.jsonl
    npz_damaged = kind.endswith("npz")
    plots = run.plots_dir
    if script == "visualize_results":
        assert_png(plots / "training_dashboard.png")
        report = json.loads((plots / "training_metrics.json").read_text())
        assert report["epochs_completed"] == (EPOCHS if npz_damaged else EPOCHS - 1)
        assert report["attention_epochs"] == ([1, 6] if npz_damaged else [1, 3, 6])
    elif script == "explorer":
        page = (plots / "explorer.html").read_text()
        assert set(re.findall(r'"epoch":(\d+)', page)) == ({"1", "6"} if npz_damaged else {"1", "3", "6"})
    elif script == "visualize_attention":
        for e in ATTENTION:
            assert (plots / f"comprehensive_epoch_{e}_analysis.png").exists() == (e != 3 or not npz_damaged)
        assert_png(plots / "attention_evolution_analysis.png")
    else:
        for stem in ("training_dashboard", "comprehensive_epoch_6_analysis", "attention_evolution_analysis",
                     "epoch_comparison", "parametric_analysis"):
            assert_png(plots / "demo" / f"{stem}.png")


def test_demo_falls_back_to_the_newest_and_oldest_readable_epochs(tmp_path, capsys):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=EPOCHS, attention_epochs=(1, 2, 4, 6), **SMALL)
    for e in (1, 6):
        cut_in_half(run.attention_path(e))
    assert demo_visualizations.cli(script_args("demo_visualizations", run)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(err) == sorted(f"warning: skipped {run.attention_path(e)} (not a readable attention file: "
                                 f"BadZipFile: File is not a zip file)" for e in (1, 6))
    out = run.plots_dir / "demo"
    assert_png(out / "comprehensive_epoch_4_analysis.png")  # the newest readable epoch
    assert_png(out / "epoch_comparison.png")  # epochs 2 and 4
    assert not (out / "comprehensive_epoch_6_analysis.png").exists()


def test_every_attention_file_damaged_is_one_line_per_file_and_exit_1(tmp_path, capsys):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=3, attention_epochs=(1, 3), **SMALL)
    for e in (1, 3):
        cut_in_half(run.attention_path(e))
    assert visualize_attention.cli(script_args("visualize_attention", run)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("warning: skipped") for line in err[:2])
    assert err[2] == f"error: {run.attention_dir}: no attention file could be read"
    # the dashboard still draws: only its attention row is empty
    assert visualize_results.cli(script_args("visualize_results", run)) == 0
    assert_png(run.plots_dir / "training_dashboard.png")


def test_real_process_prints_no_traceback(tmp_path):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=EPOCHS, attention_epochs=ATTENTION, **SMALL)
    damage(run, "random_npz")
    damage(run, "corrupt_middle_line")
    proc = subprocess.run([sys.executable, str(ROOT / "visualize_results.py"),
                           *script_args("visualize_results", run)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2, proc.stderr


# ------------------------------------------------------------------------------------------------ the reader


def test_reader_damaged_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"epoch": 1}\n\xff\xfe not utf-8\n[1, 2]\n{"epoch": 4}\n{"epoch": 5, "x": ')
    with pytest.raises(DamagedFileError, match=r"m.jsonl: line 2 is not valid JSON; the file is damaged"):
        read_jsonl(path)  # the trainer's view: a damaged middle line stops it
    skipped = []
    assert read_jsonl(path, skip=skipped.append) == [{"epoch": 1}, {"epoch": 4}]
    assert skipped == [f"line 2 of {path} (not valid JSON)", f"line 3 of {path} (a JSON list, not an object)",
                       f"line 5 of {path} (an incomplete last line, cut off while it was written)"]
    path.write_bytes(b'{"epoch": 1}\n{"epoch": 2, "x": ')
    assert read_jsonl(path) == [{"epoch": 1}]  # a torn last line alone is dropped quietly


@pytest.mark.parametrize("content,reason", [
    (b"", "not an .npz archive (it is empty)"),
    (b"\x80\x04\x95 a pickle, not an archive", "not an .npz archive (it starts with other bytes)"),
])
def test_attention_file_that_is_not_an_archive(tmp_path, content, reason):
    path = tmp_path / "epoch_0001.npz"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError) as e:
        load_attention(path)
    assert e.value.path == path and e.value.reason == f"not a readable attention file: {reason}"


def test_attention_file_with_inconsistent_arrays(tmp_path):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=1, attention_epochs=(1,), **SMALL)
    path = run.attention_path(1)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["cross"] = arrays["cross"][0]  # one axis short
    np.savez(path, **arrays)
    with pytest.raises(DamagedFileError, match="do not fit"):
        load_attention(path)


MISFITS = {  # readable files whose arrays disagree: what is changed -> the reason named
    "cross_positions": (dict(cross=lambda a: a[..., :100]), "cross-attention over 100 positions for a 12x12 image"),
    "image_shape": (dict(image_shape=lambda a: np.array([10, 10, 3])), "cross-attention over 144 positions for a "
                                                                         "10x10 image (100 pixels)"),
    "probe_images": (dict(inputs=lambda a: a[:, :10]), "probe images (10, 12, 3) for an image shape (12, 12, 3)"),
    "permutation": (dict(permutation=lambda a: np.zeros(144, np.int64)), "a pixel permutation of shape (144,) that"),
    "self_attention": (dict(self=lambda a: a[..., :4]), "self-attention (6, 4) between 6 latents"),
    "probabilities": (dict(probs=lambda a: a[:, :2]), "probabilities (2, 2) for 2 samples of 3 classes"),
    "predictions": (dict(preds=lambda a: a + 7), "labels or predictions outside the 3 classes"),
    "points": (dict(inputs=lambda a: a[:, :50]), "cross-attention over 128 positions for probe clouds (2, 50, 3)"),
}


@pytest.mark.parametrize("what", MISFITS)
def test_readable_attention_files_whose_shapes_disagree_are_damaged(tmp_path, what):
    edits, reason = MISFITS[what]
    kind = "pointcloud" if what == "points" else "image"
    run = synthetic.make_run(tmp_path / "run", kind=kind, epochs=1, attention_epochs=(1,),
                             permuted=what == "permutation", **SMALL)
    rewrite_arrays(run.attention_path(1), **edits)
    with pytest.raises(DamagedFileError) as e:
        load_attention(run.attention_path(1))
    assert e.value.reason.startswith(f"its arrays do not fit together: {reason}")


@pytest.mark.parametrize("kind", ["image", "pointcloud"])
def test_nan_attention_maps_are_drawn_with_one_warning_naming_the_file(tmp_path, capsys, kind):
    run = synthetic.make_run(tmp_path / "run", kind=kind, epochs=EPOCHS, attention_epochs=ATTENTION, **SMALL)
    rewrite_arrays(run.attention_path(3), cross=lambda a: np.where(np.arange(a.shape[-1]) % 2, np.nan, a),
                   self=lambda a: a * np.inf)
    with np.load(run.attention_path(3)) as z:
        bad, total = int(np.isnan(z["cross"]).sum() + z["self"].size), int(z["cross"].size + z["self"].size)
    warning = (f"warning: {run.attention_path(3)}: {bad:,} of {total:,} attention weights are NaN or infinite (the "
               f"model's outputs were not finite at epoch 3); they are drawn blank")
    for script in ("visualize_attention", "visualize_results", "explorer"):
        assert CLI[script](script_args(script, run)) == 0
        assert capsys.readouterr().err.strip().splitlines() == [warning], script
    assert_png(run.plots_dir / "comprehensive_epoch_3_analysis.png")
    assert json.loads((run.plots_dir / "training_metrics.json").read_text())["attention_epochs"] == [1, 3, 6]
    page = (run.plots_dir / "explorer.html").read_text()
    assert set(re.findall(r'"epoch":(\d+)', page)) == {"1", "3", "6"} and "NaN" not in page


# --------------------------------------------------------------------------------------------- the trainer


def test_resume_refuses_a_damaged_middle_line_and_drops_a_torn_last_one(run_train):
    stopped = run_train(["--epochs", "3"], faults="sigint_step:10")  # in epoch 3 of 3
    assert stopped.code == 130, stopped.err
    run = RunDir(stopped.run_dir)
    good = run.metrics_path.read_text()
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    run.metrics_path.write_text("not json\n" + good.splitlines(keepends=True)[1])
    res = run_train(["--resume", str(run.path)], tiny=False)
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1
    assert lines[0] == (f"error: {run.metrics_path}: line 1 is not valid JSON; the file is damaged: restore it, "
                        f"or delete that line to keep the other rows")
    run.metrics_path.write_text(good + '{"epoch": 3, "train_lo')  # restored, plus a torn last line
    res = run_train(["--resume", str(run.path)], tiny=False)
    assert res.code == 0, res.err
    assert [r["epoch"] for r in read_jsonl(run.metrics_path)] == [1, 2, 3]
    assert run.metrics_path.read_text().endswith("}\n")
