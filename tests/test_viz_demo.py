"""demo_visualizations.py: every figure on an existing (synthetic) run, export formats, --watch on a run that
is still training, and (slow) the full demo that trains its own run with train.py."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):  # the scripts live at the repository root; shared helpers beside this file
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import demo_visualizations  # noqa: E402
from perceiver.errors import PerceiverError  # noqa: E402
from perceiver.viz import demo, synthetic  # noqa: E402
from perceiver.viz.export import save_figure  # noqa: E402
from test_viz_scripts import SMALL, assert_png  # noqa: E402

DEMO_FIGURES = ("training_dashboard", "comprehensive_epoch_4_analysis", "comprehensive_epoch_4_self_analysis",
                "attention_evolution_analysis", "epoch_comparison", "parametric_analysis")


def test_demo_on_existing_run_writes_every_figure(tmp_path):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=4, attention_epochs=(1, 2, 4), permuted=True,
                             **SMALL)
    out = tmp_path / "demo_out"
    rc = demo_visualizations.cli(["--logs_dir", str(run.path), "--output_dir", str(out), "--formats", "png",
                                  "--dpi", "40", "--alphas", "0.4", "1.0"])
    assert rc == 0
    for stem in DEMO_FIGURES:
        assert_png(out / f"{stem}.png")
    assert json.loads((out / "training_metrics.json").read_text())["epochs_completed"] == 4


def test_export_formats(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0], label="line")
    ax.set_title("export")
    paths = save_figure(fig, tmp_path, "fig", ("png", "svg", "pdf"), dpi=50)
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    assert paths[1].read_text().lstrip().startswith("<?xml") and "<svg" in paths[1].read_text()
    assert paths[2].read_bytes().startswith(b"%PDF")
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary file behind
    with pytest.raises(PerceiverError, match="unknown figure format"):
        save_figure(plt.figure(), tmp_path, "x", ("gif",))


def test_watch_follows_a_run_until_it_finishes(tmp_path):
    run = synthetic.make_run(tmp_path / "live", kind="image", epochs=1, attention_epochs=(1,), state="running",
                             **SMALL)
    rows = synthetic.metrics_rows(3)
    renders, polls = [], []

    def render():
        renders.append(len(run.read_metrics()))
        return []

    def fake_sleep(_seconds):  # the "trainer": one more epoch per poll, then finished
        polls.append(1)
        n = len(run.read_metrics())
        if n < 3:
            run.append_metrics(rows[n])
            run.write_status("running" if n + 1 < 3 else "finished", epoch=n + 1, epochs=3)

    state = demo.watch(run, render, interval=0.01, timeout=60, sleep=fake_sleep)
    assert state == "finished"
    assert renders == [1, 2, 3]  # one render per new epoch, the last after the run finished


def test_watch_ignores_a_previous_run_until_the_new_process_writes(tmp_path):
    """The demo's own training (--watch without --logs_dir): an old finished run in the folder is not drawn."""
    run = synthetic.make_run(tmp_path / "old", kind="image", epochs=2, attention_epochs=(), state="finished",
                             **SMALL)

    class FakeProc:
        pid, returncode = -12345, None

        def poll(self):
            return self.returncode

    proc, renders = FakeProc(), []

    def fake_sleep(_seconds):  # the new process overwrites the run and finishes one epoch
        run.metrics_path.unlink(missing_ok=True)
        run.append_metrics(synthetic.metrics_rows(1)[0])
        run.write_status("finished", epoch=1, epochs=1, pid=proc.pid)  # extra fields override the writer's pid

    state = demo.watch(run, lambda: renders.append(len(run.read_metrics())) or [], interval=0.01, timeout=60,
                       proc=proc, sleep=fake_sleep)
    assert state == "finished" and renders == [1]


def test_watch_times_out(tmp_path):
    run = synthetic.make_run(tmp_path / "stuck", kind="image", epochs=1, attention_epochs=(), state="running",
                             **SMALL)
    clock = iter(range(0, 1000, 5))
    renders = []
    state = demo.watch(run, lambda: renders.append(1) or [], interval=5, timeout=20, sleep=lambda s: None,
                       clock=lambda: next(clock))
    assert state == "timeout" and renders == [1]


def test_demo_train_command_is_small_and_offline():
    cmd = demo.train_command("/tmp/logs", epochs=2)
    assert cmd[0] == sys.executable and cmd[1].endswith("train.py")
    for flag in ("--dataset", "--save_attention_maps", "--experiment_name", "--device"):
        assert flag in cmd
    assert cmd[cmd.index("--dataset") + 1] == "shapes2d"
    assert cmd[cmd.index("--experiment_name") + 1] == "demo_shapes2d"


@pytest.mark.slow
def test_demo_trains_its_own_run(tmp_path):
    """The whole path: train.py (subprocess) -> run directory -> every figure. Needs torch; minutes on a busy CPU."""
    pytest.importorskip("torch")
    if not (ROOT / "train.py").exists():
        pytest.skip("train.py not present")
    for name in ("train.py", "demo_visualizations.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "perceiver").symlink_to(ROOT / "perceiver")
    proc = subprocess.run([sys.executable, "demo_visualizations.py", "--demo_epochs", "2", "--formats", "png", "svg",
                           "--dpi", "40"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "logs" / "demo_shapes2d" / "plots" / "demo"
    for stem in ("training_dashboard", "comprehensive_epoch_2_analysis", "attention_evolution_analysis",
                 "epoch_comparison", "parametric_analysis"):
        assert_png(out / f"{stem}.png")
        assert (out / f"{stem}.svg").stat().st_size > 10_000
