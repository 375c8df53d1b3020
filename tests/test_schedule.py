"""LR schedule shapes: warm-up, milestones, step, cosine, and the --max_time progress."""
import math

import pytest
import torch

from perceiver.rundir import RunDir
from perceiver.schedule import LRSchedule, default_milestones, progress


def _torch_per_epoch(make, epochs, lr=1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_default_milestones_follow_the_paper():
    assert default_milestones(120) == [84, 102, 114]
    assert default_milestones(10) == [7, 9]  # 8.5 -> 9; 9.5 -> 10 = epochs: dropped
    assert default_milestones(1) == []


@pytest.mark.parametrize("name,make", [
    ("multistep", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 7], gamma=0.1)),
    ("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)),
])
def test_step_shapes_equal_torch_per_epoch_schedulers(name, make):
    kw = {"milestones": [3, 7], "gamma": 0.1} if name == "multistep" else {"step_size": 4, "gamma": 0.5}
    s = LRSchedule(name, base_lr=1.0, epochs=10, steps_per_epoch=5, **kw)
    ours = [s.lr_at_step(e * 5 + k) for e in range(10) for k in range(5)]  # constant inside an epoch
    ref = _torch_per_epoch(make, 10)
    assert ours == pytest.approx([v for v in ref for _ in range(5)])


def test_cosine_is_smooth_per_step_and_hits_eta_min():
    s = LRSchedule("cosine", base_lr=1.0, epochs=4, steps_per_epoch=10, eta_min=0.1)
    lrs = [s.lr_at_step(i) for i in range(41)]
    assert lrs[0] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert lrs[20] == pytest.approx(0.55)  # half-way: the mean of base and eta_min
    assert all(a > b for a, b in zip(lrs[:40], lrs[1:41]))  # strictly decreasing, step by step


def test_linear_warmup_per_step():
    s = LRSchedule("multistep", base_lr=0.4, epochs=10, steps_per_epoch=8, warmup_epochs=0.5, milestones=[5])
    assert [s.lr_at_step(i) for i in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    assert s.lr_at_step(5 * 8) == pytest.approx(0.04)


def test_max_time_progress_stretches_the_schedule_onto_the_budget():
    # half the budget spent after few steps: progress is half of --epochs
    assert progress(step=3, steps_per_epoch=10, epochs=8, elapsed_s=50, max_time_s=100) == pytest.approx(4.0)
    # steps ahead of time: the step count decides
    assert progress(step=60, steps_per_epoch=10, epochs=8, elapsed_s=10, max_time_s=100) == pytest.approx(6.0)
    assert progress(step=3, steps_per_epoch=10, epochs=8, elapsed_s=500, max_time_s=100) == pytest.approx(8.0)
    assert progress(step=25, steps_per_epoch=10, epochs=8) == pytest.approx(2.5)
    s = LRSchedule("cosine", base_lr=1.0, epochs=8)
    assert s.lr_at(progress(step=0, steps_per_epoch=10, epochs=8, elapsed_s=100, max_time_s=100)) == \
        pytest.approx(0.0, abs=1e-12)


def test_warmup_counts_optimizer_steps_under_a_time_budget():
    # 120 planned epochs of 10 steps over a 60 s budget: 6 s in, progress is 12 "epochs", but only 5 steps were taken
    s = LRSchedule("cosine", base_lr=1.0, epochs=120, steps_per_epoch=10, warmup_epochs=1)
    t = progress(step=4, steps_per_epoch=10, epochs=120, elapsed_s=6, max_time_s=60)
    assert t == pytest.approx(12.0)
    assert s.lr_at(t, step=4) == pytest.approx(0.5 * s.shape_at(t))  # half-way through a warm-up of 10 steps
    assert s.lr_at(t, step=20) == pytest.approx(s.shape_at(t))
    assert s.lr_at(2.5) == pytest.approx(s.lr_at(2.5, step=25))  # fixed-length runs: step = t * steps_per_epoch


def test_a_time_budgeted_run_warms_up_over_its_first_real_epoch(run_train):
    """--max_time with the default 120 planned epochs once squeezed the warm-up into 1/120 of the budget."""
    res = run_train(["--epochs", "120", "--max_time", "20", "--warmup_epochs", "1", "--save_metrics"],
                    faults="sigint_step:3")
    assert res.code == 130, res.err
    lrs = [row["lr"] for row in RunDir(res.run_dir).read_steps()]
    assert len(lrs) == 3  # 4 steps per epoch: the first three ramp up
    assert lrs[0] <= 0.003 / 4 * 1.0001 and lrs[0] < lrs[1] < lrs[2] <= 0.003 * 3 / 4 * 1.0001


def test_apply_sets_every_group():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1]}, {"params": [p2]}], lr=1.0)
    lr = LRSchedule("step", base_lr=2.0, epochs=10, step_size=1, gamma=0.5).apply(opt, 2.0)
    assert lr == 0.5 and all(g["lr"] == 0.5 for g in opt.param_groups)
    assert math.isclose(LRSchedule("cosine", base_lr=1.0, epochs=2, t_max=4).lr_at(4.0), 0.0, abs_tol=1e-12)
