"""`train.py --eval_only --resume RUN`: score a saved model on a test set and write RUN/eval.json.

The model is rebuilt from the checkpoint's own config (no model flags needed) and given the weights it is meant
to be used with (the weight average when the run kept one, `perceiver.checkpoint.model_weights`). The data flags
come from the checkpoint's arguments, updated by the ones typed (``--data_dir``, batch size, workers, device,
``--use_amp``, ``--tta``, ``--limit_eval_batches``, ``--kernels``). Scoring other test data than the run's is what it
is for: eval.json records the fingerprint of the data it scored ("data"); only a class list other than the model's
is refused. Nothing of the training run is touched: only ``eval.json`` is (re)written.
"""
from __future__ import annotations

import math
import sys
import time

from . import checkpoint as ckpt
from . import components as comp
from . import distributed as dist
from .data.mixing import flip_index
from .engine import evaluate, per_class_accuracy
from .epoch import non_finite_loss
from .errors import PerceiverError, UsageError
from .model import PerceiverConfig
from .resume import EVAL_OVERRIDES, locate, merge_flags
from .rundir import atomic_write_json
from .settings import Settings
from .step import setup_amp


def score_checkpoint(settings: Settings, *, explicit: set[str]) -> int:
    run, path = locate(settings.run.resume, eval_only=True)
    state = ckpt.load_checkpoint(path)
    s = Settings.from_flags(merge_flags(state["args"], settings.flags, explicit, checkpoint=path,
                                        allowed=EVAL_OVERRIDES, model=state.get("model_config")))
    comp.set_threads(s.runtime.threads)
    info = dist.setup(s.runtime.device)
    comp.seed_everything(s.run.seed)
    bundle, _, _ = comp.build_data(s.data)
    comp.check_splits(None, bundle.test)
    config = PerceiverConfig.from_dict(state["model_config"])
    comp.check_data_fits(config, bundle, path)
    trained_on = _trained_classes(state, run)
    if trained_on is not None and list(trained_on) != list(bundle.class_names):
        raise UsageError(f"--eval_only: the model in {path} was trained on the classes {list(trained_on)} and the "
                         f"data at --data_dir {s.data.data_dir} has {list(bundle.class_names)}: point --data_dir at "
                         f"data with the model's classes, in its order")
    fingerprint = comp.data_fingerprint(bundle, bundle.train, None, bundle.test)
    model = comp.build_model(config, info.device)
    ckpt.load_model_weights(path, model, state)
    pos = bundle.positions.to(info.device) if bundle.positions is not None else None
    tta = s.regularisation.tta
    flip = flip_index(bundle.image_shape, bundle.permutation).to(info.device) if tta else None
    loader = comp.eval_loader(bundle.test, batch_size=s.batches.batch_size, num_workers=s.batches.num_workers,
                              seed=s.run.seed, info=info)
    res = evaluate(model, loader, pos=pos, num_classes=bundle.num_classes, amp=setup_amp(s.optim.use_amp, info.device),
                   flip=flip, limit_batches=s.runtime.limit_eval_batches, info=info,
                   show_progress=not s.runtime.no_progress)
    out = {"test_loss": res.loss, "test_acc": res.acc, "n": res.n, "data_dir": s.data.data_dir, "tta": bool(tta),
           "weights": "ema" if state.get("ema") else "trained", "dataset": bundle.name, "source": bundle.source,
           "checkpoint": str(path), "epoch": state["epoch"], "per_class_acc": per_class_accuracy(res.confusion),
           "confusion": res.confusion, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "data": {k: fingerprint[k] for k in ("dataset", "class_names", "num_tokens", "permutation", "test")}}
    if res.acc_top5 is not None:
        out["test_acc_top5"] = res.acc_top5
    top5 = f" top5 {res.acc_top5:.4f}" if res.acc_top5 is not None else ""
    print(f"eval of {path} (epoch {state['epoch']}, {out['weights']} weights{', flip TTA' if tta else ''}) "
          f"on {bundle.source}: test loss {res.loss:.4f} acc {res.acc:.4f}{top5} (n={res.n})", flush=True)
    if not math.isfinite(res.loss):
        line = non_finite_loss("test", res.loss, recorded_in="eval.json" if run is not None else None)
        print(f"warning: {line}", file=sys.stderr, flush=True)
    if run is not None:
        atomic_write_json(run.eval_path, out)
        print(f"wrote {run.eval_path}", flush=True)
    return 0


def _trained_classes(state: dict, run) -> list | None:
    """The class names the checkpoint's model was trained on: its data fingerprint, else its run's config.json;
    None when neither says."""
    data = state.get("data")
    if isinstance(data, dict) and isinstance(data.get("class_names"), list):
        return data["class_names"]
    if run is None or not run.config_path.is_file():
        return None
    try:
        facts = run.read_config().get("dataset")
    except PerceiverError:
        return None
    names = facts.get("class_names") if isinstance(facts, dict) else None
    return names if isinstance(names, list) else None
