"""The attention explorer: one self-contained HTML page per run, ``<run>/plots/explorer.html``.

    python demo_visualizations.py --logs_dir logs/quickstart --interactive
    python visualize_attention.py --logs_dir logs/my_experiment --html --max_epochs 10 --max_samples 4

The page opens in any browser from ``file://``, offline: its script (``explorer_static/explorer.js``), stylesheet
and data are inlined, nothing is fetched. It shows the training curves (accuracy, loss, learning rate) with hover
read-outs and the run's summary, then the saved attention maps (``train.py --save_attention_maps``) with selectors
for the probe sample, cross-attention stage, head (or the mean of heads), latent (an index, the mean of latents, or
the most concentrated latent as `selection.select_view` picks it) and an epoch slider: the image with the map
overlaid (permuted-pixel runs mapped back onto the picture) or a rotatable point cloud, and the latent
self-attention matrix with the selected latent's row outlined.

Size: each attention row is stored as uint8 scaled by its own peak (error at most 1/510 of the peak, below what a
colormap shows) and base64-encoded. The page stays under `BUDGET_MB` by default: it keeps up to
`DEFAULT_MAX_EPOCHS` saved epochs (evenly spaced, first and last included) and the first `DEFAULT_MAX_SAMPLES`
probe samples, fewer when they would not fit (epochs go first, down to two, then samples), and says so.
``max_epochs`` / ``max_samples`` set the caps explicitly; a warning says when the page then exceeds the budget.

The page state is ``window.explorer`` (documented at the top of ``explorer.js``): the selectors, and ``current``,
the map on screen, which the browser test reads back.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PerceiverError, RunDirError
from ..rundir import AttentionSnapshot, RunDir, atomic_write
from . import reports
from . import training_metrics as tm
from .export import make_shareable
from .selection import select_view
from .style import COLORMAPS, COLORS, percent

FILENAME = "explorer.html"
BUDGET_MB = 10.0
DEFAULT_MAX_EPOCHS = 20
DEFAULT_MAX_SAMPLES = 8
PAGE_MB = 0.1  # the page without the maps and inputs: script, style, curves, colormaps
MAX_STEP_POINTS = 2000  # learning-rate curve: steps.jsonl thinned to this many points
STATIC = Path(__file__).with_name("explorer_static")


@dataclass
class ExplorerOptions:
    max_epochs: int | None = None  # None: up to DEFAULT_MAX_EPOCHS, fewer if the page would exceed BUDGET_MB
    max_samples: int | None = None  # None: up to DEFAULT_MAX_SAMPLES, likewise
    cmap: str = "viridis"
    alpha: float = 0.6
    title: str | None = None


def add_arguments(parser) -> None:
    """The explorer's size caps, shared by the two scripts that write it."""
    parser.add_argument("--max_epochs", type=_cap, default="auto",
                        help=f"explorer: at most this many saved epochs, evenly spaced (default: %(default)s = up to "
                             f"{DEFAULT_MAX_EPOCHS}, as many as fit in {BUDGET_MB:g} MB)")
    parser.add_argument("--max_samples", type=_cap, default="auto",
                        help=f"explorer: at most this many probe samples (default: %(default)s = up to "
                             f"{DEFAULT_MAX_SAMPLES}, as many as fit in {BUDGET_MB:g} MB)")


def _cap(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 'auto'), got {value}")
    return value


# --------------------------------------------------------------------------------------------- encoding


def b64(arr: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of ``arr`` as ``dtype``, base64 (JavaScript typed arrays read them back)."""
    return base64.b64encode(np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def quantize_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (last axis) as uint8 in units of the row's peak / 255, and the peaks: ``a ~= q / 255 * peak``."""
    a = np.clip(np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    peak = a.max(-1)
    q = np.rint(a / np.where(peak > 0, peak, 1.0)[..., None] * 255.0).astype(np.uint8)
    return q, peak.astype(np.float32)


def colormap_tables() -> dict[str, str]:
    """The seven colormaps of `style.COLORMAPS`, each sampled at 256 levels: base64 of (256, 3) uint8 RGB."""
    import matplotlib

    levels = np.linspace(0.0, 1.0, 256)
    return {name: b64(np.rint(matplotlib.colormaps[name](levels)[:, :3] * 255), "u1") for name in COLORMAPS}


def _finite_list(x: np.ndarray) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(x, dtype=float)]


# ----------------------------------------------------------------------------------------------- payload


def curves_payload(run: RunDir, series: tm.Series) -> dict:
    """Per-epoch curves from metrics.jsonl, and the per-step learning rate from steps.jsonl when it exists."""
    names = [n for n in ("train_acc", "test_acc", "val_acc", "test_acc_top5", "train_loss", "test_loss", "val_loss",
                         "lr") if series.has(n)]
    losses = [series.get(n) for n in ("train_loss", "test_loss", "val_loss") if series.has(n)]
    out = {"epochs": [int(e) for e in series.epochs], "series": {n: _finite_list(series.get(n)) for n in names},
           "log_loss": tm.use_log_scale(*losses)}
    steps = [r for r in run.read_steps() if isinstance(r, dict) and "step" in r
             and isinstance(r.get("lr"), (int, float))]  # a non-finite rate is recorded as null
    if steps:
        keep = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_STEP_POINTS)).round().astype(int))
        rows = [steps[i] for i in keep]
        out["steps"] = {"step": [int(r["step"]) for r in rows], "epoch": [int(r.get("epoch", 0)) for r in rows],
                        "lr": [float(r["lr"]) for r in rows]}
    return out


def summary_payload(run: RunDir, series: tm.Series, config: dict | None, status: dict | None) -> list[list[str]]:
    """(label, value) lines of the run summary, formatted as on the dashboard."""
    from .dashboard import _config_facts, _duration

    facts = _config_facts(config)
    lines = [["run", run.name], ["dataset", str(facts["dataset"] or "n/a")]]
    if isinstance(status, dict) and status.get("state"):
        lines.append(["state", f"{status['state']}" + (f" ({status['message']})" if status.get("message") else "")])
    if isinstance(facts["params"], (int, float)):
        lines.append(["parameters", f"{int(facts['params']):,}"])
    model = (config or {}).get("model") if isinstance((config or {}).get("model"), dict) else {}
    counts = [f"{model[k]} {label}{'s' if model[k] != 1 else ''}" for k, label in (
        ("num_cross_attend_stages", "stage"), ("num_transformer_blocks", "block"), ("num_heads", "head")) if k in model]
    if "num_latents" in model:
        size = f"{model['num_latents']} latents" + (f" × {model['latent_dim']}" if "latent_dim" in model else "")
        lines.append(["model", ", ".join([size, *counts])])
    if not len(series):
        return lines
    m = tm.compute_metrics(series)
    fin, best = m["final"], m["best"]
    lines.append(["epochs", f"{m['epochs_completed']} (last {m['last_epoch']})"])
    if "test_acc" in best:
        lines.append(["best test acc", f"{percent(best['test_acc']['value'])} (epoch {best['test_acc']['epoch']})"])
    for name, label in (("test_acc", "final test acc"), ("train_acc", "final train acc"),
                        ("test_loss", "final test loss"), ("train_loss", "final train loss")):
        if name in fin:
            lines.append([label, percent(fin[name]) if name.endswith("acc") else f"{fin[name]:.4f}"])
    lines.append(["state of training", f"{m['state']['label']}, {m['gap']['diagnosis']}"])
    lines.append(["time", _duration(m.get("total_time_s"))])
    return lines


def _cross_block(snap: AttentionSnapshot, samples: int) -> tuple[list, list]:
    """Per stage: quantised cross-attention in input order (S, heads, M, N) and the "most concentrated" latent of
    each sample and head choice (heads..., then the mean of heads), by `select_view`'s rule."""
    stages, auto = [], []
    heads = snap.cross.shape[2]
    for stage in range(snap.num_stages):
        q, peak = quantize_rows(snap.cross_in_input_order(stage)[:samples])  # (S, heads, M, N), (S, heads, M)
        stages.append({"q": b64(q, "u1"), "peak": b64(peak, "<f4")})
        auto.append([[select_view(snap, stage=stage, sample=s, head=h, latent="auto").latent
                      for h in [*range(heads), None]] for s in range(samples)])
    return stages, auto


def _self_block(snap: AttentionSnapshot, samples: int) -> list | None:
    if snap.self_ is None or snap.self_.size == 0:
        return None
    out = []
    for stage in range(snap.self_.shape[0]):
        row = []
        for block in range(snap.self_.shape[1]):
            q, peak = quantize_rows(snap.self_[stage, block, :samples])  # (S, heads, M, M), (S, heads, M)
            row.append({"q": b64(q, "u1"), "peak": b64(peak, "<f4")})
        out.append(row)
    return out


def estimate_mb(snap: AttentionSnapshot, epochs: int, samples: int) -> float:
    """Size in MB of a page holding ``epochs`` snapshots like ``snap`` with ``samples`` samples: the maps (uint8
    and a float32 peak per row) and the inputs, base64, plus `PAGE_MB` for the script, curves and colormaps."""
    maps = snap.cross[:, :1].size * (1 + 4 / snap.cross.shape[-1])
    if snap.self_ is not None:
        maps += snap.self_[:, :, :1].size * (1 + 4 / snap.self_.shape[-1])
    inputs = snap.inputs[0].size * (1 if snap.kind == "image" else 4)
    return (maps * epochs + inputs) * samples * 4 / 3 / 1e6 + PAGE_MB


def choose_caps(snap: AttentionSnapshot, saved: int, opts: ExplorerOptions) -> tuple[int, int]:
    """(epochs, samples) to keep: the explicit caps, or the defaults reduced to fit `BUDGET_MB` (epochs first,
    down to two, then samples)."""
    probes = len(snap.labels)
    epochs = min(saved, opts.max_epochs or DEFAULT_MAX_EPOCHS)
    samples = min(probes, opts.max_samples or DEFAULT_MAX_SAMPLES)
    if opts.max_epochs is None:
        while epochs > 2 and estimate_mb(snap, epochs, samples) > BUDGET_MB:
            epochs -= 1
    if opts.max_samples is None:
        while samples > 1 and estimate_mb(snap, epochs, samples) > BUDGET_MB:
            samples -= 1
    return epochs, samples


def attention_payload(run: RunDir, opts: ExplorerOptions) -> dict | None:
    """The saved epochs (capped), the probe inputs and every map, or None when the run saved no attention."""
    from .evolution import pick_evenly

    saved = run.attention_epochs()
    if not saved:
        return None
    last = None
    for e in reversed(saved):  # the newest readable file sets the shapes
        last = reports.load_snapshot(run, e)
        if last is not None:
            break
        saved = [s for s in saved if s != e]  # a damaged file: the others still make a page
    if last is None:
        raise RunDirError(f"{run.attention_dir}: no attention file could be read")
    n_epochs, samples = choose_caps(last, len(saved), opts)
    epochs = pick_evenly(saved, n_epochs) if n_epochs > 1 else saved[-1:]
    probes = len(last.labels)
    if len(epochs) < len(saved) or samples < min(probes, DEFAULT_MAX_SAMPLES):
        reports.info(f"{run.path}: the explorer keeps {len(epochs)} of {len(saved)} saved epochs "
                     f"({', '.join(map(str, epochs))}) and {samples} of {probes} probe samples (--max_epochs and "
                     f"--max_samples choose; by default the page fits in {BUDGET_MB:g} MB)")
    mb = estimate_mb(last, len(epochs), samples)
    if mb > BUDGET_MB:
        reports.warn(f"{run.path}: the explorer will be about {mb:.0f} MB, over the {BUDGET_MB:g} MB budget; "
                     f"lower --max_epochs ({len(epochs)}) or --max_samples ({samples}) for a lighter page")
    snaps = []
    for e in epochs:
        snap = last if e == last.epoch else reports.load_snapshot(run, e)
        if snap is not None:
            snaps.append(snap)
    if last.kind == "image":
        images = np.asarray(last.inputs[:samples])
        images = np.repeat(images, 3, -1) if images.ndim == 4 and images.shape[-1] == 1 else images[..., :3]
        inputs = [b64(img, "u1") for img in images]  # (H, W, 3) uint8 each
    else:
        inputs = [b64(np.asarray(p, dtype=np.float32)[:, :3], "<f4") for p in last.inputs[:samples]]  # (N, 3)
    per_epoch = []
    for snap in snaps:
        if (snap.kind != last.kind or snap.cross.shape[0] != last.cross.shape[0]
                or snap.cross.shape[2:] != last.cross.shape[2:] or snap.cross.shape[1] < samples):
            reports.warn(f"{run.attention_path(snap.epoch)}: maps shaped {snap.cross.shape}, unlike the last "
                         f"epoch's {last.cross.shape}; left out of the explorer")
            continue
        cross, auto = _cross_block(snap, samples)
        probs = np.asarray(snap.probs, dtype=np.float64)[:samples]
        preds = [int(p) for p in np.asarray(snap.preds)[:samples]]
        per_epoch.append({
            "epoch": snap.epoch, "preds": preds,
            "probs": _finite_list([probs[i, p] if probs.ndim == 2 else probs[i] for i, p in enumerate(preds)]),
            "cross": cross, "auto": auto, "self": _self_block(snap, samples),
        })
    if not per_epoch:
        raise RunDirError(f"{run.attention_dir}: no attention file could be read")
    shape = last.cross.shape  # (stages, S, heads, M, N)
    self_shape = None if last.self_ is None or last.self_.size == 0 else last.self_.shape
    return {
        "kind": last.kind,
        "image_shape": list(last.image_shape) if last.image_shape is not None else None,
        "permuted": last.permutation is not None,
        "saved_epochs": saved,
        "class_names": list(last.class_names),
        "samples": [{"index": int(i), "label": int(l)} for i, l in zip(last.sample_indices[:samples],
                                                                      last.labels[:samples])],
        "probe_count": int(len(last.labels)),
        "inputs": inputs,
        "cross_shape": {"stages": shape[0], "heads": shape[2], "latents": shape[3], "positions": shape[4]},
        "self_shape": None if self_shape is None else {"stages": self_shape[0], "blocks": self_shape[1],
                                                        "heads": self_shape[3], "latents": self_shape[4]},
        "epochs": per_epoch,
    }


def build_payload(run: RunDir, opts: ExplorerOptions) -> dict:
    """Everything the page shows, as JSON-ready data."""
    series = tm.series_from_rows(run.read_metrics(skip=reports.skip))
    config = status = None
    try:
        config = run.read_config() if run.config_path.exists() else None
        status = run.read_status()
    except RunDirError as e:
        reports.warn(str(e))
    attention = attention_payload(run, opts)
    if attention is None and not len(series):
        raise RunDirError(f"{run.path} holds neither metrics nor attention maps yet; train with --save_metrics "
                          f"--save_attention_maps (python train.py --experiment_name {run.name} ...)")
    if attention is None:
        reports.warn(f"{run.path}: no attention maps (no {run.attention_dir.name}/epoch_*.npz); the explorer shows "
                     f"the training curves only. Train with --save_attention_maps for the maps")
    return {
        "title": opts.title or run.name,
        "summary": summary_payload(run, series, config, status),
        "curves": curves_payload(run, series) if len(series) else None,
        "attention": attention,
        "colormaps": colormap_tables(),
        "colors": COLORS,
        "defaults": {"cmap": opts.cmap, "alpha": opts.alpha},
    }


# ------------------------------------------------------------------------------------------------- page


def _inline_script(text: str) -> str:
    """Text safe inside <script>: no closing tag can end it early."""
    return text.replace("</", "<\\/")


def render_html(payload: dict) -> str:
    template = (STATIC / "explorer.html").read_text()
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    parts = {
        "{{TITLE}}": _escape(payload["title"]),
        "{{STYLE}}": (STATIC / "explorer.css").read_text(),
        "{{DATA}}": _inline_script(data),
        "{{SCRIPT}}": _inline_script((STATIC / "explorer.js").read_text()),
    }
    for key, value in parts.items():
        template = template.replace(key, value, 1)
    return template


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def write_explorer(run: RunDir, out_dir: Path | None = None, opts: ExplorerOptions | None = None) -> list[Path]:
    """Write ``explorer.html`` for one run (to ``<run>/plots/`` by default) and return its path in a list."""
    opts = opts or ExplorerOptions()
    path = Path(out_dir if out_dir is not None else run.plots_dir) / FILENAME
    html = render_html(build_payload(run, opts))
    try:
        atomic_write(path, lambda f: f.write(html.encode()))
    except OSError as e:
        raise PerceiverError(f"cannot write {path}: {e.strerror or e}") from None
    make_shareable(path)
    mb = path.stat().st_size / 1e6
    if mb > BUDGET_MB:
        reports.warn(f"{path} is {mb:.1f} MB, over the {BUDGET_MB:g} MB budget: lower --max_epochs or --max_samples")
    return [path]
