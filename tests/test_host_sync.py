"""The training step loop reads no device value back to the host between its sync points, seen at the dispatcher.

tests/host_reads.py says what counts as a device tensor on a CPU (every tensor the step touches, except a
DataLoader's own work and the tensors it names: `HOST_TENSORS`, which stay on the host on a GPU too, and
`KNOWN_SYNCS`, read on purpose). Each case runs train.py's real loop (2 epochs of 4 steps, a sync every 3 steps,
so sync points at steps 3 and 6 and at both epoch ends) and states which named reads it allows.
"""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_TRAIN, _subprocess_env
from host_reads import HostReads, StepLoopWatch
from perceiver.optim import param_groups
from perceiver.step import Amp

SYNC_EVERY = 3
LOOP = ["--epochs", "2", "--sync_every", str(SYNC_EVERY), "--save_metrics", "--no_progress"]


def fp16_amp(use_amp, device):
    """What `setup_amp` gives on a GPU without bfloat16: float16 autocast with a GradScaler."""
    if not use_amp:
        return Amp(device_type=device.type)
    return Amp(True, torch.float16, device.type, torch.amp.GradScaler(device.type))


def sgd(model, *, lr, **_):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def fused_adamw(model, *, lr, weight_decay, **_):
    """The AdamW `build_optimizer` picks on CUDA (fused: step counts on the device, the GradScaler's flag taken
    there); torch has the same kernel for the CPU."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, weight_decay=weight_decay, fused=True)


# name: (train.py flags, replaced builders, the named reads allowed)
CASES = {
    "lamb, ema, clip, accumulation, label smoothing": (
        ["--optimizer", "lamb", "--ema_decay", "0.9", "--grad_clip", "1", "--gradient_accumulation_steps", "2",
         "--label_smoothing", "0.1"], {}, {"host step counts"}),
    "adamw, ema, no clip": (["--optimizer", "adamw", "--ema_decay", "0.9", "--grad_clip", "0"], {},
                            {"host step counts"}),
    "sgd with momentum, ema": (["--ema_decay", "0.9"], {"build_optimizer": sgd}, set()),
    "lamb, bf16 autocast": (["--optimizer", "lamb", "--use_amp"], {}, {"host step counts"}),
    "lamb, fp16 with GradScaler, ema": (["--optimizer", "lamb", "--use_amp", "--ema_decay", "0.9"],
                                        {"setup_amp": fp16_amp}, {"host step counts", "found_inf"}),
    "adamw, fp16 with GradScaler, ema": (["--optimizer", "adamw", "--use_amp", "--ema_decay", "0.9"],
                                         {"setup_amp": fp16_amp}, {"host step counts", "found_inf"}),
    "fused adamw (as on CUDA), fp16 with GradScaler": (["--use_amp", "--ema_decay", "0.9"],
                                                       {"setup_amp": fp16_amp, "build_optimizer": fused_adamw},
                                                       set()),
    "lamb, device data, permuted pixels, mixup and cutmix": (
        ["--optimizer", "lamb", "--device_data", "on", "--permute_pixels", "--mixup_alpha", "0.8",
         "--cutmix_alpha", "1.0"], {}, {"host step counts"}),
    "adamw, mixup and cutmix from the DataLoader": (
        ["--optimizer", "adamw", "--mixup_alpha", "0.8", "--cutmix_alpha", "1.0"], {}, {"host step counts"}),
    "lamb, point clouds on the device, ema": (
        ["--optimizer", "lamb", "--dataset", "shapes3d", "--device_data", "on", "--ema_decay", "0.9"], {},
        {"host step counts"}),
}


def watched(run_train, args):
    watch = StepLoopWatch().install()
    try:
        res = run_train(LOOP + args)
    finally:
        watch.remove()
    assert res.code == 0, res.err[-2000:]
    return watch


@pytest.mark.parametrize("name", list(CASES))
def test_the_step_loop_reads_nothing_back_between_sync_points(run_train, monkeypatch, name):
    import perceiver.parts
    flags, builders, allowed = CASES[name]
    for attr, fn in builders.items():
        monkeypatch.setattr(perceiver.parts, attr, fn)
    watch = watched(run_train, flags)
    assert not watch.reads.found, "\n".join(watch.reads.found[:10])
    assert set(watch.reads.named) == allowed
    assert watch.updates and watch.epoch_ends[-1] == watch.updates
    watch.check_sync_points(SYNC_EVERY)


@pytest.mark.slow
def test_a_two_process_gloo_run_reads_nothing_back_between_sync_points(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "watched_run.py"), str(tmp_path / "reads"), *TINY_TRAIN, "--logs_dir", str(tmp_path),
           "--experiment_name", "ddp", *LOOP, "--batch_size", "8", "--optimizer", "lamb", "--ema_decay", "0.9"]
    res = subprocess.run(cmd, cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"reads.rank{rank}.json").read_text())
        assert seen["code"] == 0 and not seen["found"], seen["found"][:10]
        assert set(seen["named"]) == {"host step counts"}
        assert seen["epoch_ends"] == [4, 8]  # 64 images / (8 x 2 ranks) a step
        assert all(w % SYNC_EVERY == 0 or w in seen["epoch_ends"] for w in seen["windows"]), seen["windows"]


# ------------------------------------------------------------------------------------------------ the guard


def test_the_guard_sees_reads_made_inside_cpp_and_through_tensor_methods():
    reads = HostReads()
    a, b = [torch.zeros(3)], [torch.ones(3)]
    v = torch.arange(4.0)
    with reads.watching():
        torch._foreach_lerp_(a, b, torch.tensor(0.5))  # a 0-d tensor weight is turned into a number in C++
        bool(v[0] == 0)
        torch.equal(v, v)
        v[v > 1].sum()  # a boolean mask: the result's size is data
        v.tolist()
    ops = [f.split(" at ")[0] for f in reads.found]
    assert ops == ["aten::_local_scalar_dense", "aten::_local_scalar_dense", "aten::equal", "aten::index",
                   "Tensor.tolist"]
    assert "tests/test_host_sync.py" in reads.found[0]  # where the read was made


def test_the_guard_names_host_tensors_and_ignores_what_it_is_told_to():
    counts = torch.tensor(3.0)
    reads = HostReads(host=lambda t: "counts" if t is counts else None)
    with reads.watching():
        counts.item()
        with reads.disarmed():
            torch.ones(()).item()
    assert not reads.found and reads.named == {"counts": 1}


def test_a_read_planted_in_the_step_is_reported(run_train, monkeypatch):
    from perceiver.step import TrainStep
    real = TrainStep.forward_backward

    def reading(self, x, y, **kw):
        loss, correct = real(self, x, y, **kw)
        float(loss)  # what a progress print would do
        return loss, correct
    monkeypatch.setattr(TrainStep, "forward_backward", reading)
    watch = watched(run_train, ["--optimizer", "lamb"])
    assert len(watch.reads.found) == 8 and "reading" in watch.reads.found[0]  # 2 epochs x 4 batches
