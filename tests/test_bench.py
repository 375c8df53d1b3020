"""Smoke test of benchmarks/bench.py: the tiny config, one iteration, every section; no timing assertions.
"""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from benchmarks import bench, report
from benchmarks.configs import CONFIGS, ours_config
from conftest import REPO, _subprocess_env
from perceiver.model import Perceiver

HAVE_THEIRS = importlib.util.find_spec("perceiver_pytorch") is not None


def test_tiny_benchmark_runs_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--json", str(out), "--quiet", "--threads", "1"]
    if HAVE_THEIRS:
        argv += ["--compare", "perceiver-pytorch"]
    bench.main(argv)
    res = json.loads(out.read_text())
    tiny = res["configs"]["tiny"]
    ours = tiny["variants"]["ours"]
    for mode in ("train", "eval"):
        assert ours[mode]["samples_per_s"] > 0
        assert ours[mode]["flops_per_sample"] > 0
        assert 0 < ours[mode]["fraction_of_matmul_peak"]
        assert ours[f"memory_{mode}"]["peak_rss_mb"] > 0
    assert ours["params"] == Perceiver(ours_config(CONFIGS["tiny"])).num_parameters()
    if HAVE_THEIRS:
        assert "ours/theirs" in tiny["ratios"] and tiny["ratios"]["ours/theirs"]["train_speed"] > 0
    points = res["scaling"]["points"]
    assert points["perceiver"]["256"]["status"] == "ok" and points["transformer"]["256"]["status"] == "ok"
    assert res["capture"]["epoch"]["median_s"] > 0 and "overhead" in res["capture"]
    assert res["machine"]["torch"] == torch.__version__

    # the markdown tables of the README come from the JSON file
    capsys.readouterr()
    report.main([str(out)])
    md = capsys.readouterr().out
    assert f"| ours | {ours['params']:,} | " in md
    assert "| N tokens | Perceiver s/step |" in md and "\n| 256 | " in md


@pytest.mark.parametrize("argv, message", [
    (["--configs", "small,huge"], "unknown config(s) huge"),
    (["--sections", "speed,sped"], "unknown section(s) sped"),
    (["--cpu-variants", "bf16,fp8"], "--cpu_variants: unknown variant(s) fp8"),
])
def test_bad_arguments_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_compare_without_perceiver_pytorch_is_skipped_in_tiny_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "have_theirs", lambda: False)
    res = bench.main(["--tiny", "--quiet", "--sections", "speed", "--no-memory", "--compare", "perceiver-pytorch"])
    assert set(res["configs"]["tiny"]["variants"]) == {"ours"}


def test_cpu_variants_time_bf16_autocast_beside_float32():
    res = bench.main(["--tiny", "--quiet", "--sections", "speed", "--no-memory", "--cpu-variants", "bf16",
                      "--device", "cpu"])
    variants = res["configs"]["tiny"]["variants"]
    assert list(variants) == ["ours", "ours+bf16"]
    assert variants["ours+bf16"]["train"]["samples_per_s"] > 0
    assert variants["ours+bf16"]["params"] == variants["ours"]["params"]


def test_count_flops_of_a_matmul():
    from benchmarks.timing import count_flops
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: torch.mm(a, b)) == 2 * 64 * 32 * 16


def test_timed_rounds_alternate_the_order_and_summarise_each_function():
    from benchmarks.timing import timed_rounds
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "b", "c")}
    times = timed_rounds(fns, warmup=1, iters=3, device=torch.device("cpu"))
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")  # warm-up, then rounds 1-3
    for k in fns:
        t = times[k]
        assert t["n"] == 3 and len(t["all_s"]) == 3 and t["min_s"] <= t["median_s"] <= t["max_s"]


# ------------------------------------------------------------------------------------------ the GPU check


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu_runs_every_section_compiled_and_writes_after_each(tmp_path, monkeypatch):
    from benchmarks import gpu_check, gpu_steps
    path = tmp_path / "gpu.json"
    written = []  # the sections the file held at each write
    real_write = gpu_check.write

    def write(out, json_path):
        real_write(out, json_path)
        written.append(dict(json.loads(path.read_text())["sections"]))
    monkeypatch.setattr(gpu_check, "write", write)
    gpu_check.main(["--device", "cpu", "--smoke", "--json", str(path), "--iters", "1", "--budget_s", "3000"])
    saved = json.loads(path.read_text())
    assert set(saved["sections"]) == set(gpu_check.SECTIONS)  # the file's keys are sorted
    assert {k: v["status"] for k, v in saved["sections"].items()} == {k: "done" for k in gpu_check.SECTIONS}
    for i, name in enumerate(gpu_check.SECTIONS):  # each section's figures reached the file when it finished
        assert any(w.get(name, {}).get("status") == "done" and len(w) == i + 1 for w in written), name
    for run in ("trainpy_fast", "trainpy_cudagraphs", "trainpy_fast_seed1"):  # compiled, and compiled once
        assert saved[run]["epochs"] == 2 and saved[run]["recompiles"] == 0 and saved[run]["graph_breaks"] == 0, run
    assert saved["trainpy_plain"]["data_on_device"] is False and saved["trainpy_fast"]["data_on_device"] is False
    acc = saved["fast_vs_plain_acc"]
    assert len(acc["fast"]) == len(acc["plain"]) == 2 and acc["test_images"] == 32 and acc["se"] > 0
    assert saved["goals"]["fast_vs_plain_acc_diff"]["verdict"] == acc["verdict"]
    assert 0 < saved["exp1_large_batch_mfu"] and saved["absorb_vs_project_speed"] > 0
    peer = saved["peer"]["samples_per_s"]
    assert {"ours+bf16+compile", "ours-no-absorb+bf16+compile"} <= set(peer)
    if importlib.util.find_spec("transformers") is not None:
        assert "hf+bf16" in peer and saved["exp1_vs_hf_train_speed"] > 0
    if HAVE_THEIRS:
        assert saved["exp1_vs_peer_train_speed"] > 0
    prof = saved["profile"]
    assert prof["batch"] == gpu_steps.SMOKE_MODEL["batch"] and prof["steps"] == 2 and prof["top"]
    assert sum(t["self_s"] for t in prof["top"]) <= prof["wall_s"] * 1.05  # per step, like the wall time


def test_step_profile_counts_each_operator_per_step():
    from benchmarks.step_profile import describe, profile_step
    a = torch.randn(64, 64)

    def step():
        b = a @ a
        b = b @ a
        torch.relu(b @ a)
    res = profile_step(step, torch.device("cpu"), steps=4, warmup=1)
    ops = {t["op"]: t for t in res["top"]}
    assert ops["aten::mm"]["calls"] == 3 and ops["aten::relu"]["calls"] == 1
    assert 0 < ops["aten::mm"]["self_s"] < res["wall_s"] and "kernels" not in res  # no device on a CPU
    assert describe(res)[0].startswith("profile: ") and any("aten::mm" in line for line in describe(res))


def test_gpu_check_skips_what_will_not_fit_the_budget_and_says_why(tmp_path):
    from benchmarks import gpu_check
    out = gpu_check.main(["--device", "cpu", "--smoke", "--json", str(tmp_path / "gpu.json"), "--budget_s", "60",
                          "--sections", "trainpy", "peer"])
    saved = json.loads((tmp_path / "gpu.json").read_text())
    for name in ("trainpy", "peer"):  # planned at 150 s and 120 s on a CPU
        status = saved["sections"][name]["status"]
        assert status.startswith("skipped: estimated") and "planning figure" in status, status
    assert out["goals"]["exp1_b64_trainpy_samples_per_s"]["met"] is None


@pytest.mark.slow
def test_a_killed_gpu_check_keeps_the_sections_it_finished(tmp_path):
    """The process is killed (SIGKILL) as its second section starts: the first section's figures are on disk."""
    path = tmp_path / "gpu.json"
    code = ("import os, sys; from benchmarks import gpu_check; "
            "gpu_check.section_peer = lambda *a: os.kill(os.getpid(), 9); "
            "gpu_check.main(sys.argv[1:])")
    res = subprocess.run([sys.executable, "-c", code, "--device", "cpu", "--smoke", "--no_compile", "--iters", "1",
                          "--json", str(path), "--sections", "mfu", "peer"], cwd=REPO, env=_subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == -9, res.stderr[-2000:]
    saved = json.loads(path.read_text())
    assert saved["sections"]["mfu"]["status"] == "done" and saved["exp1_large_batch_mfu"] > 0
    assert "status" not in saved["sections"].get("peer", {})


@pytest.mark.parametrize("fast, plain, verdict", [
    ([0.80, 0.80], [0.80, 0.79], "undecided"),   # 1,000 images: one standard error is about 0.013
    ([0.60, 0.62], [0.80, 0.82], "not met"),
])
def test_the_accuracy_comparison_is_decided_beyond_the_test_sets_noise(fast, plain, verdict):
    from benchmarks import gpu_check
    out = {"trainpy_fast": {"test_acc": fast[0]}, "trainpy_fast_seed1": {"test_acc": fast[1]},
           "trainpy_plain": {"test_acc": plain[0], "test_samples": 1000}, "trainpy_plain_seed1": {"test_acc": plain[1]}}
    gpu_check.compare_accuracy(out)
    mf, mp = sum(fast) / 2, sum(plain) / 2
    se = (mf * (1 - mf) / 2000 + mp * (1 - mp) / 2000) ** 0.5
    acc = out["fast_vs_plain_acc"]
    assert out["fast_vs_plain_acc_diff"] == pytest.approx(abs(mf - mp)) and acc["se"] == pytest.approx(se)
    assert acc["verdict"] == verdict and gpu_check.goals(out)["fast_vs_plain_acc_diff"]["met"] is {
        "met": True, "not met": False}.get(verdict)


def test_the_accuracy_goal_is_met_with_a_large_enough_test_set():
    from benchmarks import gpu_check
    out = {"trainpy_fast": {"test_acc": 0.801}, "trainpy_plain": {"test_acc": 0.800, "test_samples": 1_000_000}}
    gpu_check.compare_accuracy(out)
    assert out["fast_vs_plain_acc"]["verdict"] == "met" and gpu_check.goals(out)["fast_vs_plain_acc_diff"]["met"]


def test_a_smoke_check_through_gpu_run_sh_leaves_the_committed_gpu_figures_alone(tmp_path):
    """benchmarks/results/gpu.json holds the figures measured on a GPU; the CPU smoke check of the shell wrapper
    writes its JSON and log to the temporary folder instead."""
    results = REPO / "benchmarks" / "results"
    before = {name: (results / name).read_bytes() for name in ("gpu.json", "gpu.log")}
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--device", "cpu", "--smoke",
                          "--budget_s", "1", "--sections", "trainpy"],
                         cwd=REPO, env={**_subprocess_env(), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert {name: (results / name).read_bytes() for name in before} == before
    saved = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert saved["smoke"] and saved["sections"]["trainpy"]["status"].startswith("skipped")
    assert "wrote " + str(tmp_path / "gpu_smoke.json") in (tmp_path / "gpu_smoke.log").read_text()


def test_late_speed_times_a_trained_checkpoint_with_and_without_the_guards(run_train):
    result = run_train(["--epochs", "1", "--limit_train_batches", "2", "--limit_eval_batches", "1"])
    assert result.code == 0
    argv = [sys.executable, str(REPO / "benchmarks" / "late_speed.py"), "--checkpoint", str(result.run_dir),
            "--threads", "1", "--batch_size", "4", "--steps", "1", "--rounds", "1"]
    out = subprocess.run(argv, cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for guards in ("on", "off"):
        row = next(line for line in lines if line.strip().startswith(f"guards {guards}:"))
        assert "trained" in row and "fresh" in row and " ms" in row
    assert sum("times as fast" in line for line in lines) == 2
    missing = subprocess.run(argv[:2] + ["--checkpoint", str(result.run_dir / "nope")], cwd=REPO,
                             env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and "nope" in missing.stderr
