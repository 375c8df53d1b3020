"""`train.py --eval_only --resume RUN`: evaluate a saved checkpoint on the test set, write RUN/eval.json.

The model is rebuilt from the checkpoint's own config (no model flags needed); the data flags come from the
checkpoint's arguments, updated by the ones typed (``--data_dir``, batch size, workers, device, ``--use_amp``,
``--limit_eval_batches``). Nothing of the training run is touched: only ``eval.json`` is (re)written.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import checkpoint as ckpt
from . import components as comp
from . import distributed as dist
from .engine import evaluate, per_class_accuracy, setup_amp
from .rundir import RunDir, atomic_write_json


def evaluate_checkpoint(args: argparse.Namespace, state: dict, path: Path, run: RunDir | None) -> int:
    """--eval_only: rebuild the model from the checkpoint, evaluate the test set, write RUN/eval.json."""
    from .model import PerceiverConfig

    info = dist.setup(args.device)
    comp.seed_everything(args.seed)
    bundle, _, _ = comp.build_data(argparse.Namespace(**{**vars(args), "val_split": 0.0}))
    config = PerceiverConfig.from_dict(state["model_config"])
    comp.check_data_fits(config, bundle, path)
    model = comp.build_model(config, info.device)
    ckpt.load_model_weights(path, model, state)
    pos = bundle.positions.to(info.device) if bundle.positions is not None else None
    res = evaluate(model, comp.eval_loader(bundle.test, args, info), device=info.device, pos=pos,
                   amp=setup_amp(args.use_amp, info.device), num_classes=bundle.num_classes,
                   limit_batches=args.limit_eval_batches, info=info)
    out = {"test_loss": res["loss"], "test_acc": res["acc"], "n": res["n"], "data_dir": args.data_dir,
           "dataset": bundle.name, "source": bundle.source, "checkpoint": str(path), "epoch": state["epoch"],
           "per_class_acc": per_class_accuracy(res["confusion"]), "confusion": res["confusion"],
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if "acc_top5" in res:
        out["test_acc_top5"] = res["acc_top5"]
    top5 = f" top5 {out['test_acc_top5']:.4f}" if "test_acc_top5" in out else ""
    print(f"eval of {path} (epoch {state['epoch']}) on {bundle.source}: test loss {out['test_loss']:.4f} "
          f"acc {out['test_acc']:.4f}{top5} (n={out['n']})", flush=True)
    if run is not None:
        atomic_write_json(run.eval_path, out)
        print(f"wrote {run.eval_path}", flush=True)
    return 0
