"""Training techniques: mixup/cutmix, the mirror image and test-time averaging, the weight average (EMA),
large-batch learning-rate scaling, compilation, progress bars."""
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from perceiver.data.images import pixel_permutation
from perceiver.data.mixing import BatchMix, flip_index
from perceiver.ema import EMA
from perceiver.engine import evaluate
from perceiver.model import Perceiver, PerceiverConfig
from perceiver.position import grid_positions
from perceiver.rundir import RunDir
from perceiver.schedule import scaled_lr
from perceiver.step import setup_amp


def image_model(**kw):
    torch.manual_seed(0)
    return Perceiver(PerceiverConfig(in_channels=3, num_classes=4, pos_dim=2, fourier_bands=2, max_freq=8.0,
                                     num_latents=4, latent_dim=16, num_cross_attend_stages=1,
                                     num_transformer_blocks=1, num_heads=2, **kw))


# ---------------------------------------------------------------------------------------------- mixup / cutmix


def test_mixup_blends_inputs_and_targets_with_the_same_weight():
    np.random.seed(0)
    x, y = torch.randn(6, 16, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, target = BatchMix(num_classes=4, mixup_alpha=0.4)(x, y)
    lam = target[0, 0].item()  # sample 0 (class 0) is blended with sample 5 (class 1)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(target.sum(1), torch.ones(6))
    assert target[0, 1].item() == pytest.approx(1 - lam)


@pytest.mark.parametrize("permuted", [False, True])
def test_cutmix_pastes_a_rectangle_and_weights_labels_by_its_area(permuted):
    np.random.seed(3)
    h = w = 8
    perm = pixel_permutation(h * w, seed=1) if permuted else None
    x = torch.arange(4, dtype=torch.float32)[:, None, None].expand(4, h * w, 1).clone()  # sample i is all i
    y = torch.arange(4)
    mixed, target = BatchMix(num_classes=4, cutmix_alpha=1.0, image_shape=(h, w, 1), permutation=perm)(x, y)
    pasted = mixed[0, :, 0] != 0  # sample 0 received pixels of sample 3
    pixels = torch.zeros(h * w, dtype=torch.bool)
    pixels[perm if permuted else torch.arange(h * w)] = pasted  # token i shows pixel perm[i]
    rows, cols = pixels.view(h, w).nonzero(as_tuple=True)
    box = pixels.view(h, w)[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.all()  # in image space the pasted pixels form one rectangle
    assert target[0, 3].item() == pytest.approx(pasted.float().mean().item())
    assert target[0, 0].item() == pytest.approx(1 - pasted.float().mean().item())


def test_cutmix_refuses_point_clouds():
    with pytest.raises(ValueError, match="point cloud"):
        BatchMix(num_classes=4, cutmix_alpha=1.0)


# -------------------------------------------------------------------------------------------- the mirror image


@pytest.mark.parametrize("permuted", [False, True])
def test_flip_index_mirrors_the_image_whatever_the_pixel_order(permuted):
    h, w = 3, 5
    image = torch.arange(h * w, dtype=torch.float32).view(h, w)
    perm = pixel_permutation(h * w, seed=2) if permuted else None
    tokens = image.flatten()[perm] if permuted else image.flatten()  # token i shows pixel perm[i]
    flipped_tokens = tokens[flip_index((h, w, 1), perm)]
    expected = image.flip(1).flatten()
    assert torch.equal(flipped_tokens, expected[perm] if permuted else expected)


def test_tta_averages_exactly_the_image_and_its_mirror():
    model = image_model().eval()
    pos = grid_positions(4, 4)
    x, y = torch.randn(6, 16, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    flip = flip_index((4, 4, 3), None)
    res = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=4), pos=pos, num_classes=4, flip=flip,
                   show_progress=False)
    with torch.no_grad():
        probs = (model(x, pos).softmax(-1) + model(x[:, flip], pos).softmax(-1)) / 2
    assert res.acc == pytest.approx((probs.argmax(1) == y).float().mean().item())
    assert res.loss == pytest.approx(torch.nn.functional.nll_loss(probs.log(), y).item(), rel=1e-5)
    plain = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=4), pos=pos, num_classes=4,
                     show_progress=False)
    assert plain.loss != pytest.approx(res.loss)


# ------------------------------------------------------------------------------------------------------- EMA


def test_ema_follows_the_weights_with_the_stated_decay():
    model = image_model()
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        ema.update()
    # warm-up: decays min(0.9, 2/11), min(0.9, 3/12), min(0.9, 4/13) for updates 1..3
    expected = {k: v.clone() for k, v in start.items()}
    for t, d in enumerate([2 / 11, 3 / 12, 4 / 13], start=1):
        for k in expected:
            if expected[k].is_floating_point() and k in dict(model.named_parameters()):
                expected[k] = d * expected[k] + (1 - d) * (start[k] + t)
    name = "head.weight"
    torch.testing.assert_close(ema.model.state_dict()[name], expected[name])
    assert not torch.equal(ema.model.state_dict()[name], model.state_dict()[name])


def test_ema_run_evaluates_saves_and_resumes_its_own_weights(run_train):
    args = ["--epochs", "3", "--ema_decay", "0.9", "--val_split", "0.25", "--save_metrics"]
    ref = run_train(args, name="ref")
    assert ref.code == 0, ref.err
    run = RunDir(ref.run_dir)
    rows = run.read_metrics()
    assert all("raw_val_acc" in r for r in rows) and "raw weights" in ref.out
    last = torch.load(run.last_checkpoint, weights_only=True)
    assert last["ema"] is not None and last["ema"]["updates"].item() == 9  # 48 images / 16 = 3 steps x 3 epochs
    assert any(not torch.equal(last["ema"]["weights"][k], last["model"][k]) for k in last["model"])
    stopped = run_train(args, name="cut", faults="sigint_step:5")
    assert stopped.code == 130
    resumed = run_train(["--resume", str(stopped.run_dir)], tiny=False, name="cut")
    assert resumed.code == 0, resumed.err
    again = torch.load(RunDir(stopped.run_dir).last_checkpoint, weights_only=True)
    for k in last["ema"]["weights"]:
        assert torch.equal(again["ema"]["weights"][k], last["ema"]["weights"][k]), k
    strip = ("epoch_time_s", "train_time_s", "eval_time_s", "samples_per_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in RunDir(stopped.run_dir).read_metrics()] == \
        [{k: v for k, v in r.items() if k not in strip} for r in rows]
    ev = run_train(["--eval_only", "--resume", str(run.path), "--tta"], tiny=False, name="ref")
    assert ev.code == 0, ev.err
    out = json.loads(run.eval_path.read_text())
    assert out["weights"] == "ema" and out["tta"] is True


# ------------------------------------------------------------------------------------------ large batches


def test_learning_rate_scaling_rules():
    assert scaled_lr(4e-3, 1024, base_batch=64, rule="sqrt") == pytest.approx(4e-3 * 4)
    assert scaled_lr(4e-3, 1024, base_batch=64, rule="linear") == pytest.approx(4e-3 * 16)
    assert scaled_lr(4e-3, 1024, base_batch=64, rule="none") == 4e-3
    with pytest.raises(ValueError, match="scaling"):
        scaled_lr(1.0, 2, base_batch=1, rule="cubic")


def test_train_py_scales_the_peak_rate_with_the_global_batch(run_train):
    res = run_train(["--epochs", "1", "--batch_size", "32", "--gradient_accumulation_steps", "2",
                     "--lr", "0.001", "--lr_scaling", "sqrt", "--lr_base_batch", "16", "--save_metrics"])
    assert res.code == 0, res.err
    cfg = RunDir(res.run_dir).read_config()
    assert "lr 0.002" in cfg["schedule"]  # global batch 64 = 4 x 16: sqrt -> x2
    assert max(s["lr"] for s in RunDir(res.run_dir).read_steps()) <= 0.002 + 1e-12


# ---------------------------------------------------------------------------------------------- compilation


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("kernels", ["auto", "plain"])
def test_the_model_compiles_as_one_graph(pooling, kernels):
    torch._dynamo.reset()
    model = image_model(output_pooling=pooling, kernels=kernels)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    pos, x = grid_positions(4, 4), torch.randn(2, 16, 3)
    for _ in range(2):  # the second call reuses the graph (the position cache does not break it)
        out = compiled(x, pos)
        out.sum().backward()
    torch.testing.assert_close(out, model(x, pos))


def test_a_point_cloud_model_compiles_as_one_graph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Perceiver(PerceiverConfig(in_channels=3, num_classes=4, pos_dim=3, pos_from_input=True, fourier_bands=2,
                                      num_latents=4, latent_dim=16, num_cross_attend_stages=2,
                                      num_transformer_blocks=1, num_heads=2))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.rand(2, 10, 3) * 2 - 1
    torch.testing.assert_close(compiled(x), model(x))


def test_train_py_compile_runs_the_compiled_step(run_train, monkeypatch):
    real = torch.compile
    calls = []

    def eager_compile(fn, **kw):  # the eager backend: the same tracing, no C++ toolchain or minutes of codegen
        calls.append(kw)
        return real(fn, **{**kw, "backend": "eager"})
    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    res = run_train(["--epochs", "1", "--compile", "--ema_decay", "0.9", "--optimizer", "lamb"])
    assert res.code == 0, res.err
    assert len(calls) == 2 and calls[0]["fullgraph"] is True  # the model as one graph, and the update
    rows = RunDir(res.run_dir).read_metrics()
    assert math.isfinite(rows[0]["train_loss"])


# ---------------------------------------------------------------------------------------------- progress bars


def test_progress_bars_follow_stderr_and_no_progress(monkeypatch):
    import sys

    from perceiver.distributed import DistInfo
    from perceiver.engine import progress_bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress_bar(3, desc="x", show=True, info=DistInfo()).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not progress_bar(3, desc="x", show=True, info=DistInfo()).disable
    assert progress_bar(3, desc="x", show=False, info=DistInfo()).disable  # --no_progress
    assert progress_bar(3, desc="x", show=True, info=DistInfo(rank=1, world_size=2)).disable


def test_amp_setup_on_cpu_is_bfloat16():
    amp = setup_amp(True, torch.device("cpu"))
    assert amp.enabled and amp.dtype == torch.bfloat16
