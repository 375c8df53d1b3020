"""Smoke test of benchmarks/bench.py: the tiny config, one iteration, every section; no timing assertions.
"""
import importlib.util
import json

import pytest
import torch

from benchmarks import bench, report
from benchmarks.configs import CONFIGS, ours_config
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
])
def test_bad_arguments_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_compare_without_perceiver_pytorch_is_skipped_in_tiny_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "have_theirs", lambda: False)
    res = bench.main(["--tiny", "--quiet", "--sections", "speed", "--no-memory", "--compare", "perceiver-pytorch"])
    assert set(res["configs"]["tiny"]["variants"]) == {"ours"}


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


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu_writes_every_key(tmp_path):
    from benchmarks import gpu_check
    out = gpu_check.main(["--device", "cpu", "--smoke", "--json", str(tmp_path / "gpu.json"), "--iters", "1",
                          "--sections", "trainpy", "plain", "mfu"])
    saved = json.loads((tmp_path / "gpu.json").read_text())
    for key in ("device", "torch", "date", "exp1_b64_trainpy_samples_per_s", "compile_s", "exp1_large_batch_mfu",
                "fast_vs_plain_acc_diff", "goals"):
        assert key in saved, key
    assert saved["trainpy_fast"]["epochs"] == 2 and saved["trainpy_plain"]["data_on_device"] is False
    assert saved["trainpy_fast"]["data_on_device"] is False  # auto: the device path is for CUDA
    assert 0 < out["exp1_large_batch_mfu"] and not out.get("errors")
