"""Engine pieces in-process: the step loop (accumulation, AMP, non-finite losses), evaluation, samplers,
checkpoints, RNG state (host reads of the step loop: tests/test_host_sync.py)."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from perceiver.checkpoint import capture_rng, config_diff, load_checkpoint, restore_rng, save_checkpoint
from perceiver.distributed import DistInfo, EpochSampler, ShardSampler
from perceiver.engine import (EpochResult, LearningRate, LoopState, NonFiniteLossError, Stop, evaluate,
                              train_one_epoch)
from perceiver.step import TrainStep, setup_amp
from perceiver.errors import CheckpointError
from perceiver.model import Perceiver, PerceiverConfig

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(in_channels=3, num_classes=6, pos_dim=3, pos_from_input=True, fourier_bands=2, max_freq=4.0,
               num_latents=4, latent_dim=16, num_cross_attend_stages=1, num_transformer_blocks=1, num_heads=2,
               dropout=0.0)
    cfg.update(kw)
    return Perceiver(PerceiverConfig(**cfg))


def points_data(n=16, tokens=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, tokens, 3, generator=g) * 2 - 1, torch.randint(0, 6, (n,), generator=g))


def _train(model, loader, accum, opt=None, amp=None, state=None, **kw) -> tuple[EpochResult, object]:
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.5)
    step = TrainStep(model, opt, pos=None, amp=amp or setup_amp(False, CPU), grad_clip=kw.pop("grad_clip", 0.0))
    res = train_one_epoch(step, loader, state=state or LoopState(), lr=lambda g, t: opt.param_groups[0]["lr"],
                          accum_steps=accum, show_progress=False, **kw)
    return res, opt


def test_gradient_accumulation_equals_one_big_batch():
    data = points_data(16)
    big = tiny_model()
    _train(big, DataLoader(data, batch_size=8), accum=1)  # 2 steps of 8
    small = tiny_model()
    res, _ = _train(small, DataLoader(data, batch_size=2), accum=4)  # 2 steps of 4 x 2
    assert res.steps == 2 and res.batches == 8 and res.sums.n == 16 and res.complete
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_short_last_accumulation_group_is_averaged_over_its_own_size():
    data = points_data(6)
    ref = tiny_model()
    _train(ref, DataLoader(data, batch_size=4), accum=1, limit_batches=1)  # one step on samples 0..3
    ref_state = {k: v.clone() for k, v in ref.state_dict().items()}
    m = tiny_model()
    res, _ = _train(m, DataLoader(data, batch_size=2), accum=3, limit_batches=2)  # a group cut short at 2
    assert res.steps == 1
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], rtol=1e-5, atol=1e-6)


def test_epoch_metrics_equal_an_independent_computation():
    data = points_data(12)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay put: the metrics can be recomputed after
    res, _ = _train(model, DataLoader(data, batch_size=4), accum=1, opt=opt)
    model.eval()
    with torch.no_grad():
        logits = model(data.tensors[0])
    assert res.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, data.tensors[1]).item(), rel=1e-5)
    assert res.acc == pytest.approx((logits.argmax(1) == data.tensors[1]).float().mean().item())


def test_amp_bf16_autocast_runs_on_cpu():
    amp = setup_amp(True, CPU)
    assert amp.enabled and amp.dtype == torch.bfloat16 and amp.scaler is None
    model = tiny_model()
    res, _ = _train(model, DataLoader(points_data(8), batch_size=4), accum=1,
                    opt=torch.optim.AdamW(model.parameters(), lr=1e-3), amp=amp, grad_clip=1.0)
    assert np.isfinite(res.loss) and res.steps == 2
    ev = evaluate(model, DataLoader(points_data(8), batch_size=4), pos=None, amp=amp, num_classes=6,
                  show_progress=False)
    assert np.isfinite(ev.loss) and ev.n == 8


def test_evaluate_metrics_and_confusion():
    model = tiny_model()
    data = points_data(10)
    res = evaluate(model, DataLoader(data, batch_size=3), pos=None, num_classes=6, show_progress=False)
    with torch.no_grad():
        logits = model(data.tensors[0])
    labels = data.tensors[1]
    assert res.n == 10 and res.confusion.sum() == 10
    assert res.acc == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert res.acc_top5 == pytest.approx(top5)
    assert res.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert 0.0 <= res.acc <= 1.0
    small = evaluate(tiny_model(num_classes=3), DataLoader(TensorDataset(data.tensors[0], labels % 3), batch_size=5),
                     pos=None, num_classes=3, show_progress=False)
    assert small.acc_top5 is None  # top-5 only means something with more than 5 classes


@pytest.mark.parametrize("sync_every", [1, 100])
def test_non_finite_loss_is_reported_at_the_step_it_happened(monkeypatch, sync_every):
    import perceiver.step as step_module
    calls = [0]
    real = step_module.compute_loss

    def nan_at_second(*a, **k):
        calls[0] += 1
        return real(*a, **k) * (float("nan") if calls[0] == 2 else 1.0)
    monkeypatch.setattr(step_module, "compute_loss", nan_at_second)
    records = []
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    step = TrainStep(model, opt, pos=None, amp=setup_amp(False, CPU))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1 step 2"):
        train_one_epoch(step, DataLoader(points_data(16), batch_size=4), state=LoopState(), lr=lambda g, t: 0.5,
                        on_steps=records.extend, sync_every=sync_every, show_progress=False)
    assert [r.step for r in records] == [1]  # only the steps before the bad one are reported


def test_a_stop_wish_ends_the_epoch_at_that_step():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = LoopState()
    wishes = iter([Stop.NO, Stop.NO, Stop.SIGNAL])
    res = train_one_epoch(TrainStep(model, opt, pos=None, amp=setup_amp(False, CPU)),
                          DataLoader(points_data(24), batch_size=4), state=state, lr=lambda g, t: 0.1,
                          wants_stop=lambda: next(wishes), show_progress=False)
    assert res.stop == Stop.SIGNAL and not res.complete and res.state.batch == 3 and res.sums.n == 12
    assert state == LoopState()  # the state given is left as it was: the result holds the new one


def test_the_rate_of_each_step_is_a_function_of_the_steps_done_and_the_clock():
    from perceiver.schedule import LRSchedule, progress

    schedule = LRSchedule("cosine", base_lr=0.4, epochs=4, steps_per_epoch=3, warmup_epochs=1)
    fixed = LearningRate(schedule, steps_per_epoch=3, epochs=4)
    assert [fixed(k) for k in range(12)] == [schedule.lr_at_step(k) for k in range(12)]
    assert fixed(5, 1e9) == fixed(5)  # without a budget the clock is not read
    budget = LearningRate(schedule, steps_per_epoch=3, epochs=4, max_time=100.0)
    t = progress(step=2, steps_per_epoch=3, epochs=4, elapsed_s=50.0, max_time_s=100.0)
    assert budget(2, 50.0) == schedule.lr_at(t, step=2) and budget(2, 50.0) < budget(2, 10.0)

    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, ticks = [], iter(range(100))

    def rate(global_step, elapsed_s):
        seen.append((global_step, elapsed_s))
        return 0.01 * (global_step + 1)
    state = LoopState(epoch=2, global_step=6)
    res = train_one_epoch(TrainStep(model, opt, pos=None, amp=setup_amp(False, CPU)),
                          DataLoader(points_data(12), batch_size=4), state=state, lr=rate,
                          clock=lambda: float(next(ticks)), show_progress=False)
    assert seen == [(6, 0.0), (7, 1.0), (8, 2.0)]  # the steps done so far, and one clock reading per step
    assert res.lr == pytest.approx(0.09) and opt.param_groups[0]["lr"] == pytest.approx(0.09)
    assert (res.state.epoch, res.state.batch, res.state.global_step) == (2, 3, 9) and res.complete
    assert res.state.next_epoch() == LoopState(epoch=3, batch=0, global_step=9)


def test_epoch_sampler_order_depends_on_seed_and_epoch_only_and_skips():
    data = list(range(20))
    s = EpochSampler(data, info=DistInfo(), seed=3)
    s.set_epoch(2)
    full = list(s)
    torch.manual_seed(123)  # global RNG state is irrelevant
    s2 = EpochSampler(data, info=DistInfo(), seed=3)
    s2.set_epoch(2, skip=8)
    assert list(s2) == full[8:] and len(s2) == 12
    s.set_epoch(3)
    assert list(s) != full and sorted(s) == data
    shards = [list(ShardSampler(list(range(7)), info=DistInfo(rank=r, world_size=3))) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))


def test_checkpoint_roundtrip_weights_only(tmp_path):
    model = tiny_model()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    rng = capture_rng()
    expect = (random.random(), np.random.rand(), torch.rand(1))
    state = {"format": 1, "model_config": model.config.to_dict(), "model": model.state_dict(), "optimizer": {},
             "epoch": 1, "global_step": 3, "args": {"lr": 0.1, "milestones": [1, 2]}, "rng": rng}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    restore_rng(loaded["rng"])
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[0] == expect[0] and got[1] == expect[1] and torch.equal(got[2], expect[2])
    assert loaded["args"]["milestones"] == [1, 2]
    assert config_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}) == ["b: 2 -> 3", "c: '<absent>' -> 0"]


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"\x00\x17garbage" * 100, "corrupt"),
    (None, "corrupt"),  # a real checkpoint, truncated
])
def test_corrupt_checkpoints_raise_one_line(tmp_path, content, match):
    path = tmp_path / "last.pt"
    if content is None:
        save_checkpoint(path, {"format": 1, "model": tiny_model().state_dict()})
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
