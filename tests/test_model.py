"""Properties of the Perceiver a user would notice if they broke: shapes, attention, invariance, sharing."""
import math

import pytest
import torch

from perceiver.model import Perceiver, PerceiverConfig
from perceiver.position import FourierEncoding, fourier_features, grid_positions


def tiny(**kw) -> PerceiverConfig:
    base = dict(in_channels=3, num_classes=5, pos_dim=2, fourier_bands=4, max_freq=8.0, num_latents=6,
                latent_dim=16, num_cross_attend_stages=3, num_transformer_blocks=2, num_heads=2, mlp_ratio=2.0)
    base.update(kw)
    return PerceiverConfig(**base)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("hw", [(8, 8), (5, 11), (16, 16)])
def test_image_logits_shape_for_several_sizes(hw):
    model = Perceiver(tiny()).eval()
    n = hw[0] * hw[1]
    assert model(torch.randn(3, n, 3), grid_positions(*hw)).shape == (3, 5)


@pytest.mark.parametrize("n_points", [17, 64, 300])
def test_point_cloud_logits_shape_for_several_sizes(n_points):
    model = Perceiver(tiny(pos_dim=3, pos_from_input=True, num_classes=40, max_freq=64.0)).eval()
    assert model(torch.rand(2, n_points, 3) * 2 - 1).shape == (2, 40)


def test_fourier_features_match_the_formula():
    pos = torch.tensor([[0.25, -0.5]])
    feats = fourier_features(pos, num_bands=3, max_freq=10.0)  # bands 1, 3, 5 (linspace(1, max_freq / 2, 3))
    assert feats.shape == (1, 2 * (2 * 3 + 1))
    x = 0.25  # first axis: sin of each band, cos of each band, raw position
    expected = [math.sin(math.pi * f * x) for f in (1, 3, 5)] + [math.cos(math.pi * f * x) for f in (1, 3, 5)] + [x]
    assert torch.allclose(feats[0, :7], torch.tensor(expected), atol=1e-6)
    assert feats[0, 13].item() == pytest.approx(-0.5)


def test_fourier_encoding_is_cached_for_shared_positions():
    enc = FourierEncoding(pos_dim=2, num_bands=4, max_freq=8.0)
    pos = grid_positions(4, 4)
    assert enc(pos) is enc(pos)  # computed once, not per batch
    pos.mul_(0.5)  # an in-place change must not return stale features
    assert torch.allclose(enc(pos), fourier_features(pos, num_bands=4, max_freq=8.0))


def test_grid_positions_span_minus_one_to_one_row_major():
    pos = grid_positions(2, 3)
    assert pos.tolist() == [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]]


@pytest.mark.parametrize("kernels", ["auto", "plain"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_attention_capture_returns_the_weights_the_forward_used(pooling, kernels):
    cfg = tiny(output_pooling=pooling, cross_heads=2, kernels=kernels)
    model = Perceiver(cfg).eval()
    x, pos = torch.randn(2, 64, 3), grid_positions(8, 8)
    fast = model(x, pos)
    logits, attn = model(x, pos, return_attention=True)
    torch.testing.assert_close(fast, logits, rtol=1e-5, atol=1e-5)
    m = cfg.num_latents + (pooling == "cls")
    assert len(attn["cross"]) == cfg.num_cross_attend_stages
    for w in attn["cross"]:
        assert w.shape == (2, 2, m, 64)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, m))  # every latent's row is a distribution
        assert (w >= 0).all()
    assert [len(s) for s in attn["self"]] == [cfg.num_transformer_blocks] * cfg.num_cross_attend_stages
    assert attn["self"][0][0].shape == (2, cfg.num_heads, m, m)
    # Recompute the first cross-attention by hand from the module's weights: the returned map must be it.
    cross = model.cross_layers[0]
    latents = model.latents.expand(2, -1, -1)
    if pooling == "cls":
        latents = torch.cat([latents, model.cls.expand(2, -1, -1)], dim=1)
    pe = model.position_features(x, pos)
    inp = torch.cat([x, pe.expand(2, -1, -1)], dim=-1)
    mu, var = inp.mean(-1, keepdim=True), inp.var(-1, unbiased=False, keepdim=True)  # the input LayerNorm
    inp = (inp - mu) / torch.sqrt(var + cross.norm_kv.eps) * cross.norm_kv.weight + cross.norm_kv.bias
    k, _ = cross.to_kv(inp).chunk(2, dim=-1)
    q = cross.to_q(cross.norm_q(latents))
    hd = cfg.latent_dim // 2
    q, k = q.view(2, m, 2, hd).transpose(1, 2), k.view(2, 64, 2, hd).transpose(1, 2)
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    torch.testing.assert_close(attn["cross"][0], by_hand, rtol=1e-4, atol=1e-6)


def test_permuting_tokens_together_with_their_positions_leaves_logits_unchanged():
    model = Perceiver(tiny()).eval()
    x, pos = torch.randn(2, 64, 3), grid_positions(8, 8)
    perm = torch.randperm(64)
    torch.testing.assert_close(model(x, pos), model(x[:, perm], pos[perm]), rtol=1e-5, atol=1e-5)


def test_point_cloud_order_does_not_matter():
    model = Perceiver(tiny(pos_dim=3, pos_from_input=True)).eval()
    x = torch.rand(2, 50, 3) * 2 - 1
    torch.testing.assert_close(model(x), model(x[:, torch.randperm(50)]), rtol=1e-5, atol=1e-5)


def test_learned_pe_depends_on_token_order_and_fixed_size():
    model = Perceiver(tiny(use_learned_pe=True, num_tokens=64)).eval()
    assert model.pos_enc.pos_emb.shape == (64, model.config.pe_features)
    assert model.pos_enc.pos_emb.std().item() == pytest.approx(0.02, rel=0.3)
    x = torch.randn(2, 64, 3)
    assert not torch.allclose(model(x), model(x[:, torch.randperm(64)]))
    with pytest.raises(ValueError, match="64 tokens"):
        model(torch.randn(2, 32, 3))


def test_weight_sharing_changes_the_parameter_count_as_expected():
    shared = Perceiver(tiny(num_cross_attend_stages=4))
    unshared = Perceiver(tiny(num_cross_attend_stages=4, weight_sharing=False))
    one_stage = Perceiver(tiny(num_cross_attend_stages=1))
    per_stage = sum(p.numel() for p in shared.cross_layers[0].parameters()) + \
        sum(p.numel() for p in shared.latent_layers[0].parameters())
    # Sharing: the first stage plus one shared stage; no sharing: four stages of their own.
    assert len(shared.cross_layers) == 2 and len(unshared.cross_layers) == 4
    assert shared.num_parameters() == one_stage.num_parameters() + per_stage
    assert unshared.num_parameters() == one_stage.num_parameters() + 3 * per_stage
    assert shared.stage_modules == [0, 1, 1, 1]


def test_latent_array_init_is_truncated_normal_002():
    model = Perceiver(tiny(num_latents=256, latent_dim=64))
    lat = model.latents.detach()
    assert lat.abs().max() <= 0.04 + 1e-6
    assert lat.std().item() == pytest.approx(0.02, rel=0.2)


def test_gradients_reach_every_parameter():
    for kw in (dict(), dict(output_pooling="cls"), dict(use_learned_pe=True, num_tokens=16)):
        model = Perceiver(tiny(**kw))
        model(torch.randn(2, 16, 3), grid_positions(4, 4)).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert not missing, missing


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_both_poolings_train(pooling):
    # Two separable classes by colour: the loss must fall well below its start.
    model = Perceiver(tiny(output_pooling=pooling, num_classes=2, num_cross_attend_stages=1, num_transformer_blocks=1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    y = torch.arange(32) % 2
    x = torch.randn(32, 16, 3) * 0.3 + (y.float() * 2 - 1)[:, None, None]
    pos = grid_positions(4, 4)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, pos), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = tiny(dropout=0.0)
    a, b = Perceiver(cfg), Perceiver(PerceiverConfig(**{**cfg.to_dict(), "activation_checkpointing": True}))
    b.load_state_dict(a.state_dict())
    x, pos = torch.randn(2, 16, 3), grid_positions(4, 4)
    a(x, pos).pow(2).sum().backward()
    b(x, pos).pow(2).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_config_round_trips_and_validates():
    cfg = tiny(output_pooling="cls", weight_sharing=False)
    assert PerceiverConfig.from_dict(cfg.to_dict()) == cfg
    model = Perceiver(PerceiverConfig.from_dict(cfg.to_dict()))
    model.load_state_dict(Perceiver(cfg).state_dict())  # same architecture, same keys
    with pytest.raises(ValueError, match="divisible"):
        tiny(latent_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="output_pooling"):
        tiny(output_pooling="max")
    with pytest.raises(ValueError, match="unknown"):
        PerceiverConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_bad_input_shapes_are_named():
    model = Perceiver(tiny())
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        model(torch.randn(2, 16, 4), grid_positions(4, 4))
    with pytest.raises(ValueError, match="positions"):
        model(torch.randn(2, 16, 3), grid_positions(3, 3))


def test_an_image_model_called_without_positions_says_what_it_needs():
    model = Perceiver(tiny())
    with pytest.raises(ValueError, match=r"model\(x, pos\).*grid_positions"):
        model(torch.randn(2, 16, 3))


@pytest.mark.parametrize("init, factor", [("fan_in", 1.0), ("trunc_fan_in", 0.8796)])
def test_linear_init_has_the_stated_standard_deviation(init, factor):
    model = Perceiver(tiny(init=init, latent_dim=256, mlp_ratio=4.0))
    w = model.latent_layers[0].blocks[0].mlp.fc2.weight.detach()  # 256 x 1024: fan-in 1024
    assert w.std().item() == pytest.approx(factor / 1024 ** 0.5, rel=0.02)
    assert w.abs().max().item() <= 2 * factor / 0.8796 / 1024 ** 0.5 + 1e-6  # truncated at 2 std of the normal


def test_input_norm_normalises_each_whole_token():
    model = Perceiver(tiny(input_norm=True, kernels="plain")).eval()
    layer = model.cross_layers[0]
    assert layer.norm_kv.normalized_shape == (3 + model.config.pe_features,)
    seen = {}
    layer.norm_kv.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model(torch.randn(2, 16, 3) * 5 + 3, grid_positions(4, 4))
    out = seen["out"]
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3, rtol=0)


def test_cross_dim_sets_the_width_of_queries_keys_and_values():
    model = Perceiver(tiny(cross_dim=24, cross_heads=3))
    layer = model.cross_layers[0]
    assert layer.to_q.weight.shape == (24, 16) and layer.to_kv.weight.shape == (48, 3 + model.config.pe_features)
    assert layer.proj.weight.shape == (16, 24)
    _, attn = model(torch.randn(2, 16, 3), grid_positions(4, 4), return_attention=True)
    assert attn["cross"][0].shape == (2, 3, 6, 16)
    with pytest.raises(ValueError, match=r"cross_dim \(10\) must be divisible by cross_heads \(3\); e.g. cross_dim 9"):
        tiny(cross_dim=10, cross_heads=3)


def test_final_norm_can_be_left_out():
    assert isinstance(Perceiver(tiny(final_norm=False)).norm_out, torch.nn.Identity)
    assert isinstance(Perceiver(tiny()).norm_out, torch.nn.LayerNorm)


def test_configs_saved_before_the_new_fields_load_as_they_were_trained():
    old = {k: v for k, v in tiny(pos_dim=3).to_dict().items() if k not in ("pos_from_input", "init", "input_norm")}
    cfg = PerceiverConfig.from_dict(old)
    assert cfg.pos_from_input and cfg.init == "trunc_fan_in" and not cfg.input_norm
    assert PerceiverConfig().input_norm  # new models have the paper's input norm


def test_stochastic_depth_drops_whole_samples_and_keeps_the_expectation():
    from perceiver.blocks import DropPath
    drop = DropPath(0.25).train()
    x = torch.ones(4000, 3, 5)
    y = drop(x)
    kept = (y[:, 0, 0] != 0).float()
    assert y.unique().tolist() == pytest.approx([0.0, 1 / 0.75])  # a sample's branch dropped whole or scaled
    assert kept.mean().item() == pytest.approx(0.75, abs=0.03) and y.mean().item() == pytest.approx(1.0, abs=0.04)
    assert torch.equal(drop.eval()(x), x)


def test_stochastic_depth_rates_rise_linearly_over_the_distinct_blocks():
    model = Perceiver(tiny(drop_path=0.3, num_cross_attend_stages=3, num_transformer_blocks=2))
    rates = [b.drop_path.p for layer in model.latent_layers for b in layer.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert all(layer.mlp.drop_path.p == 0.0 for layer in model.cross_layers)
