"""The optional convolutional stem (`--stem conv`, perceiver/stem.py): what it computes, that each pixel stays one
token, and that a stem run trains, saves and reloads like any other."""
import numpy as np
import pytest
import torch

from perceiver import load_model
from perceiver.model import Perceiver, PerceiverConfig
from perceiver.position import grid_positions
from perceiver.rundir import RunDir
from perceiver.stem import ConvStem


def small_config(**kw) -> PerceiverConfig:
    base = dict(in_channels=3, num_classes=4, pos_dim=2, fourier_bands=4, num_latents=8, latent_dim=16,
                num_cross_attend_stages=2, num_transformer_blocks=1, num_heads=2, stem="conv", stem_width=6,
                image_size=(5, 7))
    return PerceiverConfig(**{**base, **kw})


def test_stem_is_a_same_size_3x3_convolution_and_gelu_per_pixel():
    torch.manual_seed(0)
    stem = ConvStem(in_channels=3, width=4, image_size=(5, 7)).double()
    image = torch.randn(2, 5, 7, 3, dtype=torch.float64)  # (B, H, W, C)
    out = stem(image.reshape(2, 35, 3))  # tokens in row-major pixel order
    assert out.shape == (2, 35, 4)

    # by hand: every pixel's 3x3 neighbourhood (zeros outside the image) against the kernel, then the exact GELU
    w, bias = stem.conv.weight.detach().numpy(), stem.conv.bias.detach().numpy()  # (4, 3, 3, 3), (4,)
    padded = np.pad(image.numpy(), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((2, 5, 7, 4))
    for r in range(5):
        for c in range(7):
            patch = padded[:, r:r + 3, c:c + 3, :]  # (B, 3, 3, C)
            want[:, r, c] = np.einsum("bijc,ocij->bo", patch, w) + bias
    want = torch.from_numpy(want)
    want = 0.5 * want * (1 + torch.erf(want / np.sqrt(2)))
    torch.testing.assert_close(out, want.reshape(2, 35, 4))


def test_a_pixel_reaches_only_the_tokens_of_its_neighbours():
    torch.manual_seed(0)
    stem = ConvStem(in_channels=3, width=4, image_size=(5, 7))
    x = torch.randn(1, 35, 3)
    bumped = x.clone()
    bumped[0, 2 * 7 + 5] += 1.0  # pixel (row 2, column 5)
    changed = (stem(bumped) - stem(x)).abs().sum(-1)[0].reshape(5, 7) > 0
    expect = np.zeros((5, 7), dtype=bool)
    expect[1:4, 4:7] = True
    assert np.array_equal(changed.numpy(), expect)


def test_stem_model_keeps_one_token_per_pixel_and_its_fast_path_is_exact():
    torch.manual_seed(0)
    plain = Perceiver(small_config(kernels="plain")).double().eval()
    fast = Perceiver(small_config()).double().eval()
    fast.load_state_dict(plain.state_dict())
    x, pos = torch.randn(3, 35, 3, dtype=torch.float64), grid_positions(5, 7).double()
    logits, attn = plain(x, pos, return_attention=True)
    assert logits.shape == (3, 4) and attn["cross"][0].shape == (3, 1, 8, 35)  # (B, heads, M, N): N pixels
    torch.testing.assert_close(fast(x, pos), logits)
    conv = plain.stem.conv.weight
    assert conv.std().item() == pytest.approx(1 / np.sqrt(3 * 3 * 3), rel=0.35)  # fan-in init, as the linears


def test_stem_config_checks_and_json_round_trip():
    with pytest.raises(ValueError, match="image_size"):
        small_config(image_size=None)
    with pytest.raises(ValueError, match="odd"):
        ConvStem(in_channels=3, width=4, image_size=(4, 4), kernel_size=2)
    with pytest.raises(ValueError, match="built for 5x7"):
        Perceiver(small_config())(torch.randn(1, 36, 3), grid_positions(6, 6))
    back = PerceiverConfig.from_dict(dict(small_config().to_dict(), image_size=[5, 7]))  # as read from JSON
    assert back == small_config() and back.image_size == (5, 7)
    assert PerceiverConfig(in_channels=3).stem == "none"  # the paper's model stays the default


def test_stem_run_trains_and_reloads_for_prediction(run_train):
    res = run_train(["--epochs", "2", "--stem", "conv", "--stem_width", "8", "--save_attention_maps"])
    assert res.code == 0, res.err
    run = RunDir(res.run_dir)
    cfg = run.read_config()
    assert cfg["model"]["stem"] == "conv" and cfg["model"]["image_size"] == [32, 32]
    assert run.load_attention(2).cross.shape[-1] == 1024  # the maps still cover every pixel
    loaded = load_model(res.run_dir)
    assert loaded.model.stem is not None and loaded.model.stem.conv.out_channels == 8


# Every model flag of train.py must reach the model: a flag dropped on the way (as --mlp_ratio and --dropout once
# were) trains the default model silently.
MODEL_FLAGS = {  # flag -> (value typed, the PerceiverConfig field and the value it must hold)
    "--num_latents": ("12", "num_latents", 12), "--latent_dim": ("48", "latent_dim", 48),
    "--num_cross_attend_stages": ("3", "num_cross_attend_stages", 3),
    "--num_transformer_blocks": ("3", "num_transformer_blocks", 3), "--num_heads": ("6", "num_heads", 6),
    "--cross_heads": ("2", "cross_heads", 2), "--cross_dim": ("24", "cross_dim", 24),
    "--no_input_norm": (None, "input_norm", False), "--stem": ("conv", "stem", "conv"),
    "--stem_width": ("7", "stem_width", 7), "--init": ("trunc_fan_in", "init", "trunc_fan_in"),
    "--no_final_norm": (None, "final_norm", False), "--mlp_ratio": ("2.5", "mlp_ratio", 2.5),
    "--dropout": ("0.25", "dropout", 0.25), "--drop_path": ("0.2", "drop_path", 0.2),
    "--output_pooling": ("cls", "output_pooling", "cls"), "--use_learned_pe": (None, "use_learned_pe", True),
    "--no_weight_sharing": (None, "weight_sharing", False), "--fourier_bands": ("5", "fourier_bands", 5),
    "--max_freq": ("9", "max_freq", 9.0), "--kernels": ("plain", "kernels", "plain"),
    "--activation_checkpointing": (None, "activation_checkpointing", True),
}


def test_every_model_flag_reaches_the_model_config():
    import train
    from perceiver import cli
    from perceiver.components import model_config
    from perceiver.data import build_dataset
    from perceiver.settings import Settings

    declared = {f"--{f.name}" for f in PerceiverConfig.flags()}
    assert declared == set(MODEL_FLAGS)  # a new model option: give it a value above
    parser = train.build_parser()
    assert declared <= {a.option_strings[0] for a in parser._actions if a.option_strings}
    argv = ["--dataset", "shapes2d", "--shapes_train_size", "20", "--shapes_test_size", "10"]
    for flag, (value, _, _) in MODEL_FLAGS.items():
        argv += [flag] if value is None else [flag, value]
    args, _ = cli.parse(train.build_parser, argv)
    settings = Settings.from_flags(vars(args))
    config = model_config(build_dataset(settings.data), settings.model)
    for flag, (_, name, want) in MODEL_FLAGS.items():
        assert getattr(config, name) == want, flag
    assert config.image_size == (32, 32)
    # and back: a resumed checkpoint from before a flag existed takes the flag's value from its model config
    implied = PerceiverConfig.option_flags(config.to_dict())
    dests = {a.dest for a in parser._actions if a.option_strings and a.option_strings[0] in MODEL_FLAGS}
    assert sorted(implied) == sorted(dests)
    assert {name: value for name, value in implied.items() if value != getattr(args, name)} == {}
    defaults = PerceiverConfig(in_channels=3)
    untouched = [f for f in ("num_latents", "latent_dim", "mlp_ratio", "dropout", "stem_width", "cross_heads")
                 if getattr(defaults, f) == getattr(config, f)]
    assert untouched == []


def test_a_stem_model_is_not_scored_on_images_of_another_size():
    from perceiver.components import check_data_fits
    from perceiver.data import DataSettings, build_dataset
    from perceiver.errors import CheckpointError

    bundle = build_dataset(DataSettings.from_flags(dict(dataset="shapes2d", shapes_train_size=20, shapes_test_size=10,
                                                        shapes_num_points=16, seed=0, no_augment=True)))
    check_data_fits(small_config(num_classes=10, image_size=(32, 32)), bundle, "ckpt.pt")  # fits: no error
    with pytest.raises(CheckpointError, match=r"image_size: model \(5, 7\) vs data \(32, 32\)"):
        check_data_fits(small_config(num_classes=10), bundle, "ckpt.pt")
