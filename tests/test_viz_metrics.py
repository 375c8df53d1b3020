"""Pure computations of the visualizers (no matplotlib figures): training metrics, attention statistics and
the selection of attention maps, including the un-permutation of permuted-pixel runs."""
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):  # the scripts live at the repository root; shared helpers beside this file
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from perceiver.errors import PerceiverError  # noqa: E402
from perceiver.rundir import AttentionSnapshot, RunDir  # noqa: E402
from perceiver.viz import attention_stats as st  # noqa: E402
from perceiver.viz import synthetic  # noqa: E402
from perceiver.viz import training_metrics as tm  # noqa: E402
from perceiver.viz.selection import figure_tag, select_view  # noqa: E402

# A small known metrics file; expected values computed by hand below.
KNOWN_ROWS = [
    {"epoch": 1, "train_acc": 0.50, "test_acc": 0.40, "train_loss": 1.0, "test_loss": 1.20, "epoch_time_s": 2.0},
    {"epoch": 2, "train_acc": 0.60, "test_acc": 0.50, "train_loss": 0.8, "test_loss": 1.00, "epoch_time_s": 2.0},
    {"epoch": 3, "train_acc": 0.70, "test_acc": 0.55, "train_loss": 0.6, "test_loss": 0.90, "epoch_time_s": 3.0},
    {"epoch": 4, "train_acc": 0.80, "test_acc": 0.60, "train_loss": 0.5, "test_loss": 0.85, "epoch_time_s": 3.0},
]
# test_acc mean 0.5125; squared deviations .01265625 + .00015625 + .00140625 + .00765625 = .021875; / 4; sqrt
HAND_STABILITY = 1 - math.sqrt(0.021875 / 4)  # 0.926049...
# least-squares slope of the test loss over epochs 1-4: sum(dx*dy) = -0.575, sum(dx^2) = 5 -> -0.115; / mean 0.9875
HAND_REL_SLOPE = -0.115 / 0.9875


def test_known_metrics_match_hand_computation():
    m = tm.compute_metrics(KNOWN_ROWS)
    assert m["epochs_completed"] == 4
    assert m["metrics"]["stability"] == pytest.approx(HAND_STABILITY, abs=1e-12)
    assert m["metrics"]["convergence"] == pytest.approx(1 - abs(0.85 - 0.90))
    assert m["metrics"]["generalization"] == pytest.approx(1 - abs(0.80 - 0.60))
    assert m["metrics"]["improvement"] == pytest.approx(0.60 - 0.40)
    assert m["metrics"]["overfitting"] == pytest.approx(0.20)
    assert m["state"]["label"] == "converging"
    assert m["state"]["relative_slope_per_epoch"] == pytest.approx(HAND_REL_SLOPE)
    assert m["gap"]["diagnosis"] == "overfitting"
    assert m["gap"]["final"] == pytest.approx(0.20)
    assert m["best"]["test_acc"] == {"value": 0.60, "epoch": 4}
    assert m["best"]["test_loss"] == {"value": 0.85, "epoch": 4}
    assert m["best"]["train_loss"] == {"value": 0.5, "epoch": 4}
    assert m["total_time_s"] == pytest.approx(10.0)


def test_stability_uses_the_last_ten_epochs_and_rows_are_deduplicated():
    rows = [{"epoch": e, "train_acc": 0.9, "test_acc": 0.1 if e <= 2 else 0.8, "test_loss": 1.0}
            for e in range(1, 13)]
    rows.insert(5, {"epoch": 3, "train_acc": 0.9, "test_acc": 0.0, "test_loss": 1.0})  # replaced by the later row 3
    rows.append({"epoch": 3, "train_acc": 0.9, "test_acc": 0.8, "test_loss": 1.0})
    m = tm.compute_metrics(rows)
    assert m["epochs_completed"] == 12
    assert m["metrics"]["stability"] == pytest.approx(1.0)  # epochs 3..12 all at 0.8
    assert m["metrics"]["improvement"] == pytest.approx(0.7)


def test_training_state_thresholds():
    assert tm.training_state(np.array([1.0, 1.0, 1.0, 1.0]))[0] == "converged"
    assert tm.training_state(np.array([1.0, 1.05, 1.1, 1.2]))[0] == "diverging"
    assert tm.training_state(np.array([1.0, 0.8, 0.6, 0.5]))[0] == "converging"
    assert tm.training_state(np.array([1.0, 0.9]))[0] == "undetermined"
    assert tm.training_state(np.array([1.0, 0.9, np.inf]))[0] == "diverging"
    # within +-1 %/epoch of the window mean: converged
    assert tm.training_state(np.array([1.0, 0.995, 0.99, 0.985]))[0] == "converged"


def test_single_epoch_has_no_trend_and_no_two_epoch_metrics():
    m = tm.compute_metrics(KNOWN_ROWS[:1])
    assert m["metrics"]["stability"] is None
    assert m["metrics"]["convergence"] is None
    assert m["metrics"]["improvement"] is None
    assert m["metrics"]["generalization"] == pytest.approx(0.9)
    assert m["state"]["label"] == "undetermined"
    s = tm.series_from_rows(KNOWN_ROWS[:3])
    assert tm.poly_trend(s.epochs, s.get("test_acc")) is None
    assert tm.trend_degree(4) == 1 and tm.trend_degree(10) == 2 and tm.trend_degree(300) == 3


def test_gap_diagnosis_and_log_scale():
    assert tm.diagnose_gap(0.95, 0.80) == "overfitting"
    assert tm.diagnose_gap(0.40, 0.38) == "underfitting"
    assert tm.diagnose_gap(0.90, 0.88) == "balanced"
    assert tm.use_log_scale(np.array([2.0, 0.1]))
    assert not tm.use_log_scale(np.array([2.0, 0.5]))
    assert not tm.use_log_scale(np.array([2.0, 0.0]))


def test_rolling_mean_and_std():
    mean, std = tm.rolling(np.array([1.0, 3.0, 5.0, 7.0]), 2)
    np.testing.assert_allclose(mean, [1, 2, 4, 6])
    np.testing.assert_allclose(std, [0, 1, 1, 1])


# ---------------------------------------------------------------------------------------------- attention


def test_attention_statistics_of_uniform_and_one_hot_rows():
    n = 100
    uni = np.full(n, 1 / n)
    hot = np.zeros(n)
    hot[7] = 1.0
    assert st.entropy(uni) == pytest.approx(math.log(n))
    assert st.normalized_entropy(uni) == pytest.approx(1.0)
    assert st.gini(uni) == pytest.approx(0.0, abs=1e-12)
    assert st.top_mass(uni) == pytest.approx(0.05)
    assert st.entropy(hot) == pytest.approx(0.0, abs=1e-9)
    assert st.gini(hot) == pytest.approx((n - 1) / n)
    assert st.top_mass(hot) == pytest.approx(1.0)
    assert st.effective_positions(hot) == pytest.approx(1.0)
    mask = st.top_mask(hot)
    assert mask.sum() == 5 and mask[7]
    fx, fy = st.cumulative_mass(hot)
    assert fy[1] == pytest.approx(1.0) and fx[-1] == 1.0
    a = np.stack([uni, hot])
    assert st.most_concentrated(a) == 1
    cs = st.column_stats(a)
    assert cs["mean"][7] == pytest.approx((1 / n + 1) / 2)
    assert cs["coverage"] == pytest.approx(0.06)  # ties go to the lowest index: positions 0-4, plus 7
    rs = st.row_stats(a)
    np.testing.assert_allclose(rs["normalized_entropy"], [1.0, 0.0], atol=1e-9)


def _hot_snapshot(perm, h=6, w=5, hot_pixel=(2, 3)):
    """Latent 0 of a permuted run attends only to the picture's pixel ``hot_pixel``."""
    n = h * w
    natural = np.full((1, 1, 1, 3, n), 1.0 / n, dtype=np.float32)  # stages, S, heads, M, N (picture order)
    natural[..., 0, :] = 0.0
    natural[..., 0, hot_pixel[0] * w + hot_pixel[1]] = 1.0
    cross = natural[..., perm]  # the model saw token i = pixel perm[i]
    img = np.zeros((1, h, w, 3), dtype=np.uint8)
    return AttentionSnapshot(epoch=1, kind="image", cross=cross, self_=None, inputs=img, labels=np.array([0]),
                             preds=np.array([0]), probs=np.ones((1, 2), np.float32) / 2, sample_indices=np.array([0]),
                             class_names=["a", "b"], image_shape=(h, w, 3), permutation=perm)


def test_permuted_run_is_mapped_back_to_the_picture(tmp_path):
    perm = np.random.default_rng(0).permutation(30)
    assert perm[13] != 13  # pixel (2, 3) = 13 must move for the test to mean something
    snap = _hot_snapshot(perm)
    run = RunDir(tmp_path / "perm")
    path = run.save_attention(snap)  # through the writer (float16) and back
    view = select_view(run.load_attention(1), latent="auto")
    assert path.exists()
    assert view.latent == 0 and view.permuted
    grid = view.as_grid(view.row)
    assert np.unravel_index(np.argmax(grid), grid.shape) == (2, 3)
    assert grid[2, 3] == pytest.approx(1.0, abs=1e-3)
    # without the permutation the hot token lands elsewhere: the mapping matters
    raw = snap.cross[0, 0, 0, 0].reshape(6, 5)
    assert np.unravel_index(np.argmax(raw), raw.shape) != (2, 3)


def test_selectors_and_errors():
    snap = synthetic.make_snapshot("image", 3, 6, samples=2, stages=2, heads=2, latents=4, blocks=2, size=8)
    v = select_view(snap, latent="mean")
    assert v.latent is None and v.row.shape == (64,)
    np.testing.assert_allclose(v.row, v.matrix.mean(0))
    v = select_view(snap, head=1, latent=2, stage=1, sample=1)
    assert (v.head, v.latent, v.stage, v.sample, v.latent_rule) == (1, 2, 1, 1, "chosen")
    np.testing.assert_allclose(v.matrix.sum(1), 1.0, atol=1e-6)
    v = select_view(snap, attention="self")
    assert v.matrix.shape == (4, 4) and v.block == 1
    for kwargs, flag in (({"sample": 5}, "--sample"), ({"stage": 2}, "--stage"), ({"head": 9}, "--head"),
                         ({"latent": 4}, "--latent")):
        with pytest.raises(PerceiverError, match=flag):
            select_view(snap, **kwargs)
    snap.self_ = None
    with pytest.raises(PerceiverError, match="self-attention"):
        select_view(snap, attention="self")


def test_figure_tags():
    assert figure_tag("cross", 0, None, 0) == ""
    assert figure_tag("cross", 1, None, 2) == "_stage1_sample2"
    assert figure_tag("self", 0, 1, 0, num_blocks=2) == "_self"
    assert figure_tag("self", 0, 0, 0, num_blocks=2) == "_self_stage0_block0"


def test_visualizers_never_import_torch():
    """The visualizers read run directories through rundir/ only: no torch, no training engine."""
    import subprocess

    code = ("import sys, matplotlib; matplotlib.use('Agg'); import visualize_results, visualize_attention, "
            "demo_visualizations; from perceiver.viz import attention_image, attention_points, attention_matrix, "
            "comparison, dashboard, evolution, reports, demo; "
            "bad = [m for m in ('torch', 'perceiver.engine', 'perceiver.trainer', 'perceiver.model') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
