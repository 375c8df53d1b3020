"""Run directories in, figure files out: the work behind the visualization scripts.

Each ``render_*`` function handles one run and raises `PerceiverError` (one line: what is missing and which
command produces it) when that run cannot be drawn; `for_each_run` turns those into warnings so that one bad run
does not stop the others, and tells the caller whether anything at all was drawn. Inside a run, a damaged
attention file or metrics line, or an attention file whose shapes do not fit the run, is left out with one warning
naming it (`skip`), and the rest is drawn; attention maps holding NaN are drawn with a warning (`load_snapshot`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DamagedFileError, PerceiverError, RunDirError
from ..rundir import AttentionSnapshot, RunDir, atomic_write_json, find_runs
from . import training_metrics as tm
from .export import make_shareable, save_figure
from .selection import AttentionView, figure_tag, select_view

DEFAULT_LOGS_DIR = Path("logs")
DASHBOARD_STEM = "training_dashboard"
METRICS_JSON = "training_metrics.json"
DASHBOARD_MAX_ATTENTION = 6


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def info(msg: str) -> None:
    print(msg, flush=True)


_skipped: set[str] = set()


def skip(what: str) -> None:
    """Warn that ``what`` (a damaged file, or a line of one) is left out of the figures; once per script run."""
    if what not in _skipped:
        _skipped.add(what)
        warn(f"skipped {what}")


def forget_skipped() -> None:
    """Start a new script run: warn again about damaged files seen by an earlier one (tests run several)."""
    _skipped.clear()


def skip_unreadable(err: RunDirError) -> None:
    """Warn about an attention file that cannot be read: `skip` for a damaged one, the message otherwise."""
    if isinstance(err, DamagedFileError):
        skip(f"{err.path} ({err.reason})")
    else:
        warn(str(err))


def load_snapshot(run: RunDir, epoch: int) -> AttentionSnapshot | None:
    """One epoch's attention, or None (with a warning) when its file is damaged or does not fit the run. Maps that
    hold NaN or infinite weights are returned, with a warning: they are drawn blank where not finite."""
    try:
        snap = run.load_attention(epoch)
    except RunDirError as err:
        skip_unreadable(err)
        return None
    bad, total = snap.non_finite()
    if bad:
        note = (f"{run.attention_path(epoch)}: {bad:,} of {total:,} attention weights are NaN or infinite (the "
                f"model's outputs were not finite at epoch {epoch}); they are drawn blank")
        if note not in _skipped:
            _skipped.add(note)
            warn(note)
    return snap


def load_readable(run: RunDir, epochs) -> tuple[int, AttentionSnapshot] | None:
    """The first of ``epochs`` whose attention file reads, with its snapshot; unreadable ones are skipped."""
    for e in epochs:
        snap = load_snapshot(run, e)
        if snap is not None:
            return e, snap
    return None


def resolve_runs(path: str | Path | None) -> list[RunDir]:
    """One run directory, or every run under a root; ``None`` scans ``logs/``."""
    if path is None:
        if not DEFAULT_LOGS_DIR.is_dir():
            raise RunDirError(f"no {DEFAULT_LOGS_DIR}/ folder here; train a model first (python train.py "
                              f"--experiment_name NAME) or point at a run with --logs_dir/--output_dir")
        path = DEFAULT_LOGS_DIR
    return find_runs(path)


def output_dir(run: RunDir, base: str | Path | None, several: bool) -> Path:
    """``<run>/plots`` by default; with a flag, that folder (one sub-folder per run when there are several)."""
    if base is None:
        return run.plots_dir
    return Path(base) / run.name if several else Path(base)


def for_each_run(runs: list[RunDir], render: Callable[[RunDir], list[Path]]) -> tuple[list[Path], list[str]]:
    """Render every run; a run that fails gives one warning line. Returns (files written, failure messages)."""
    written, failures = [], []
    for run in runs:
        try:
            paths = render(run)
        except PerceiverError as e:
            msg = f"{run.path}: {e}" if str(run.path) not in str(e) else str(e)
            failures.append(msg)
            if len(runs) > 1:
                warn(f"skipped {msg}")
            continue
        written += paths
    return written, failures


def nothing_drawn(failures: list[str]) -> PerceiverError:
    if len(failures) == 1:
        return PerceiverError(failures[0])
    return PerceiverError(f"nothing to draw: all {len(failures)} runs were skipped (see the warnings above)")


def choose_epochs(available: list[int], requested: list[int] | None, what: str) -> list[int]:
    """The requested saved epochs that exist (a warning names the others); all of them when none requested."""
    if not requested:
        return list(available)
    chosen = [e for e in dict.fromkeys(requested) if e in available]
    missing = [e for e in dict.fromkeys(requested) if e not in available]
    if missing:
        warn(f"{what}: no attention saved for epoch(s) {', '.join(map(str, missing))}; saved epochs: "
             f"{_epoch_list(available)}")
    return chosen


def _epoch_list(epochs: list[int]) -> str:
    if len(epochs) <= 12:
        return ", ".join(map(str, epochs))
    return ", ".join(map(str, epochs[:5])) + ", ..., " + ", ".join(map(str, epochs[-3:]))


def _read_optional(run: RunDir, reader: str):
    try:
        return getattr(run, reader)()
    except (RunDirError, FileNotFoundError) as e:
        warn(f"{run.path}: {e}")
        return None


# ------------------------------------------------------------------------------------------------ dashboard


def load_series(run: RunDir) -> tm.Series:
    rows = run.read_metrics(skip=skip)
    series = tm.series_from_rows(rows)
    if not len(series):
        why = "is missing" if not run.metrics_path.exists() else "holds no finished epoch yet"
        raise RunDirError(f"{run.metrics_path} {why}; train.py appends one row per finished epoch "
                          f"(python train.py --experiment_name {run.name})")
    return series


def render_dashboard(run: RunDir, out_dir: Path | None = None, *, title: str | None = None,
                     epochs: list[int] | None = None, enhanced_attention: bool = False, cmap: str = "viridis",
                     alpha: float = 0.6, dpi: int = 150, formats=("png",)) -> list[Path]:
    """Write ``training_dashboard.<fmt>`` and ``training_metrics.json`` for one run."""
    out_dir = Path(out_dir) if out_dir is not None else run.plots_dir
    series = load_series(run)
    metrics = tm.compute_metrics(series)
    config = _read_optional(run, "read_config") if run.config_path.exists() else None
    status = _read_optional(run, "read_status")
    views: list[AttentionView] = []
    if enhanced_attention:
        views = dashboard_attention_views(run, epochs)
    elif epochs:
        warn("--epochs only selects attention panels; add --enhanced_attention to draw them")
    from .dashboard import dashboard_figure

    fig = dashboard_figure(series, metrics, title=title or run.name, run_name=run.name, status=status,
                           config=config, attention_views=views, cmap=cmap, alpha=alpha)
    paths = save_figure(fig, out_dir, DASHBOARD_STEM, formats, dpi)
    report = {
        "experiment": title or run.name,
        "run_dir": str(run.path),
        "run_status": status,
        "figure": [p.name for p in paths],
        "attention_epochs": [v.epoch for v in views],
        **metrics,
    }
    json_path = out_dir / METRICS_JSON
    atomic_write_json(json_path, report)
    make_shareable(json_path)
    return paths + [json_path]


COMPARISON_STEM = "runs_comparison"


def run_labels(runs: list[RunDir]) -> list[str]:
    """Each run's folder name, or ``parent/name`` where two runs share a folder name."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def render_comparison(runs: list[RunDir], out_dir: Path, *, title: str | None = None, dpi: int = 150,
                      formats=("png",)) -> list[Path]:
    """Write ``runs_comparison.<fmt>`` and ``runs_comparison.json``: the accuracy curves of ``runs`` on one
    figure. A run that cannot be read is left out with a warning; at least two must remain."""
    named = []
    for run, label in zip(runs, run_labels(runs)):
        try:
            named.append((label, run, load_series(run)))
        except PerceiverError as e:
            warn(f"skipped {e}")
    if len(named) < 2:
        found = ", ".join(label for label, _, _ in named) or "none"
        raise RunDirError(f"a comparison needs at least two runs with finished epochs; readable: {found}")
    from .run_comparison import comparison_figure, summary

    infos = [{**summary(label, s), "run_dir": str(run.path)} for label, run, s in named]
    fig = comparison_figure([(s, info) for (_, _, s), info in zip(named, infos)], title=title)
    paths = save_figure(fig, out_dir, COMPARISON_STEM, formats, dpi)
    report = {"title": title, "figure": [p.name for p in paths], "accuracy_unit": "fraction in [0, 1]",
              "runs": infos}
    json_path = Path(out_dir) / f"{COMPARISON_STEM}.json"
    atomic_write_json(json_path, report)
    make_shareable(json_path)
    return paths + [json_path]


def dashboard_attention_views(run: RunDir, epochs: list[int] | None) -> list[AttentionView]:
    available = run.attention_epochs()
    if not available:
        warn(f"{run.path}: no attention maps to add (no {run.attention_dir.name}/epoch_*.npz); train with "
             f"--save_attention_maps")
        return []
    chosen = choose_epochs(available, epochs, f"{run.path}")
    if not epochs:
        from .evolution import pick_evenly

        chosen = pick_evenly(chosen, DASHBOARD_MAX_ATTENTION)
    elif len(chosen) > 8:
        from .evolution import pick_evenly

        warn(f"{run.path}: {len(chosen)} attention epochs requested; showing 8 evenly spaced ones")
        chosen = pick_evenly(chosen, 8)
    return fixed_latent_views(run, chosen, AttentionOptions())


# ------------------------------------------------------------------------------------------------ attention


@dataclass
class AttentionOptions:
    attention: str = "cross"  # "cross" | "self"
    stage: int | str = 0  # an index or "all"
    block: int = -1
    sample: int = 0
    head: int | None = None  # None = mean over heads
    latent: str | int = "auto"  # "auto" | "mean" | index
    epochs: list[int] | None = None  # None = every saved epoch
    cmap: str = "viridis"
    alpha: float = 0.6
    create_evolution: bool = False
    comprehensive: bool = True
    dpi: int = 150
    formats: tuple = ("png",)
    experiment: str | None = None


def _stages(snap, opts: AttentionOptions) -> list[int]:
    if str(opts.stage).lower() != "all":
        return [int(opts.stage)]
    arr = snap.cross if opts.attention == "cross" else snap.self_
    return list(range(arr.shape[0])) if arr is not None else [0]


def _view(snap, opts: AttentionOptions, stage: int, latent=None) -> AttentionView:
    return select_view(snap, attention=opts.attention, stage=stage, block=opts.block, sample=opts.sample,
                       head=opts.head, latent=opts.latent if latent is None else latent)


def comprehensive_figure(view: AttentionView, cmap: str, alpha: float, experiment: str | None = None):
    if view.attention == "self":
        from .attention_matrix import comprehensive_self_figure

        return comprehensive_self_figure(view, cmap, alpha, experiment)
    if view.kind == "image" and view.image_shape is not None:
        from .attention_image import comprehensive_image_figure

        return comprehensive_image_figure(view, cmap, alpha, experiment)
    from .attention_points import comprehensive_pointcloud_figure

    return comprehensive_pointcloud_figure(view, cmap, max(alpha, 0.5), experiment)


def saved_attention_epochs(run: RunDir, requested: list[int] | None) -> list[int]:
    available = run.attention_epochs()
    if not available:
        raise RunDirError(f"{run.attention_dir} holds no attention maps; train with --save_attention_maps "
                          f"(python train.py --experiment_name {run.name} --save_attention_maps)")
    chosen = choose_epochs(available, requested, str(run.path))
    if not chosen:
        raise RunDirError(f"none of the requested epochs has saved attention; saved epochs: {_epoch_list(available)}")
    return chosen


def fixed_latent_views(run: RunDir, epochs: list[int], opts: AttentionOptions, stage: int | None = None
                       ) -> list[AttentionView]:
    """One view per epoch with the same latent: ``auto`` is resolved at the last readable epoch and then held."""
    if stage is None:
        stage = 0 if str(opts.stage).lower() == "all" else int(opts.stage)
    views, latent = [], opts.latent
    for e in reversed(epochs):
        snap = load_snapshot(run, e)
        if snap is None:
            continue
        v = _view(snap, opts, stage, latent)
        if latent == "auto":
            latent = v.latent
        views.append(v)
        del snap
    return views[::-1]


def render_attention(run: RunDir, out_dir: Path | None = None, opts: AttentionOptions | None = None) -> list[Path]:
    """Write ``comprehensive_epoch_X_analysis.png`` per saved epoch and, with ``create_evolution``,
    ``attention_evolution_analysis.png``; selections other than the defaults add a tag to the names."""
    opts = opts or AttentionOptions()
    out_dir = Path(out_dir) if out_dir is not None else run.plots_dir
    experiment = opts.experiment or run.name
    epochs = saved_attention_epochs(run, opts.epochs)
    written: list[Path] = []
    stages_seen: list[int] = []
    if opts.comprehensive:
        for e in epochs:
            snap = load_snapshot(run, e)
            if snap is None:
                continue
            for stage in _stages(snap, opts):
                view = _view(snap, opts, stage)
                stages_seen.append(view.stage)
                tag = figure_tag(view.attention, view.stage, view.block, view.sample, view.num_blocks)
                fig = comprehensive_figure(view, opts.cmap, opts.alpha, experiment)
                written += save_figure(fig, out_dir, f"comprehensive_epoch_{e}{tag}_analysis", opts.formats, opts.dpi)
            del snap
    if opts.create_evolution:
        if not stages_seen:
            found = load_readable(run, reversed(epochs))
            stages_seen = _stages(found[1], opts) if found else []
        for stage in dict.fromkeys(stages_seen):
            views = fixed_latent_views(run, epochs, opts, stage)
            if not views:
                continue
            from .evolution import evolution_figure

            v = views[-1]
            tag = figure_tag(v.attention, v.stage, v.block, v.sample, v.num_blocks)
            fig = evolution_figure(views, opts.cmap, opts.alpha, experiment)
            written += save_figure(fig, out_dir, f"attention_evolution_analysis{tag}", opts.formats, opts.dpi)
    if not written:
        raise RunDirError(f"{run.attention_dir}: no attention file could be read")
    return written
