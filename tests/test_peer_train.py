"""benchmarks/peer_train.py: perceiver-pytorch through train.py's data, step, schedule and evaluation."""
import importlib.util
import json

import pytest
import torch

from benchmarks import peer_train

HAVE_THEIRS = importlib.util.find_spec("perceiver_pytorch") is not None


@pytest.mark.skipif(not HAVE_THEIRS, reason="perceiver-pytorch is not installed")
def test_trains_their_model_within_the_budget_and_writes_the_figures(tmp_path):
    out = tmp_path / "peer.json"
    argv = ["--dataset", "shapes2d", "--shapes_train_size", "64", "--shapes_test_size", "32", "--num_workers", "0",
            "--num_latents", "8", "--latent_dim", "32", "--num_cross_attend_stages", "1",
            "--num_transformer_blocks", "1", "--num_heads", "2", "--fourier_bands", "4", "--batch_size", "16",
            "--epochs", "2", "--max_time", "300", "--val_split", "0.25", "--json", str(out)]
    assert peer_train.main(argv) == 0
    res = json.loads(out.read_text())
    assert [r["epoch"] for r in res["epochs"]] == [1, 2]  # the planned epochs, well inside the budget
    assert res["epochs_trained"] == 2.0 and res["train_samples"] == 2 * 44
    assert res["test_acc"] == res["epochs"][-1]["test_acc"] and 0.0 <= res["test_acc"] <= 1.0
    assert res["val_acc"] is not None and res["kwargs"]["latent_dim"] == 32 and res["kwargs"]["depth"] == 1
    from perceiver_pytorch import Perceiver
    assert res["parameters"] == sum(p.numel() for p in Perceiver(**res["kwargs"]).parameters())


@pytest.mark.skipif(not HAVE_THEIRS, reason="perceiver-pytorch is not installed")
def test_tokens_reach_their_model_as_the_image():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, image):
            seen["image"] = image
            return image.sum(dim=(1, 2))

    image = torch.randn(2, 4, 5, 3)  # (B, H, W, C)
    tokens = image.reshape(2, 20, 3)  # row-major pixels, as the image datasets serve them
    peer_train.ImageInput(Probe(), (4, 5, 3))(tokens, None)
    assert torch.equal(seen["image"], image)


def test_time_budget_stops_mid_epoch(tmp_path):
    if not HAVE_THEIRS:
        pytest.skip("perceiver-pytorch is not installed")
    out = tmp_path / "peer.json"
    argv = ["--dataset", "shapes2d", "--shapes_train_size", "2000", "--shapes_test_size", "16", "--num_workers", "0",
            "--num_latents", "8", "--latent_dim", "32", "--num_cross_attend_stages", "1",
            "--num_transformer_blocks", "1", "--num_heads", "2", "--fourier_bands", "4", "--batch_size", "8",
            "--epochs", "50", "--max_time", "0.2", "--json", str(out)]
    assert peer_train.main(argv) == 0
    res = json.loads(out.read_text())
    assert len(res["epochs"]) == 1 and res["train_samples"] < 2000  # stopped inside the first epoch
