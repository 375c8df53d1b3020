"""Named flag sets for `train.py --preset NAME`: the specification's three experiments and the README's quick start.

A preset is shorthand for typing its flags: ``python train.py --preset exp1 --data_dir ./data`` is the
specification's Experiment 1 command, and any flag typed after (or before) ``--preset`` overrides the preset's
value. ``--data_dir`` is left out of every preset: the specification's ``./data`` is already the default, and a
preset never decides where your data lives. `perceiver.cli.with_presets` applies them (and ``--config`` files)
through the same argparse checks as typed flags.
"""
from __future__ import annotations

#: The named model configurations, each defined here once: the model flags of the presets below, of the benchmarks'
#: configurations (benchmarks/configs.py) and of the demo's run (perceiver/viz/demo.py). ``small`` is the quick
#: start's model; ``cifar_cpu`` the model of the CPU-budget CIFAR-10 runs; the others are the specification's. The
#: per-dataset Fourier flags apply to their dataset only.
MODELS: dict[str, dict] = {
    "small": {"num_latents": 16, "latent_dim": 64, "num_cross_attend_stages": 1, "num_transformer_blocks": 2,
              "num_heads": 2},
    "cifar_cpu": {"num_latents": 16, "latent_dim": 128, "num_cross_attend_stages": 2, "num_transformer_blocks": 2,
                  "num_heads": 4},
    "exp1": {"cifar10_fourier_bands": 64, "cifar10_max_freq": 32.0, "num_latents": 96, "latent_dim": 384,
             "num_cross_attend_stages": 4, "num_transformer_blocks": 4, "num_heads": 3, "dropout": 0.2,
             "output_pooling": "mean"},
    "exp2": {"use_learned_pe": True, "num_latents": 96, "latent_dim": 384, "num_cross_attend_stages": 1,
             "num_transformer_blocks": 4, "num_heads": 3, "dropout": 0.2, "output_pooling": "mean"},
    "exp3": {"modelnet40_fourier_bands": 64, "modelnet40_max_freq": 1120.0, "num_latents": 128, "latent_dim": 512,
             "num_cross_attend_stages": 2, "num_transformer_blocks": 6, "num_heads": 8, "dropout": 0.1,
             "output_pooling": "mean"},
}

#: The CIFAR-10 runs on the whole training split at a CPU budget, chosen on a validation split of the 50,000 images
#: (docs/RECIPES.md, with the figures). 16 latents for 600 s: three times the epochs of 64 in the same time, which
#: the model's underfitting makes worth more than the latents' capacity. The random crop per budget: off for 600 s
#: (in its few epochs it costs more fit than it buys), on for the hour (where the model without it overfits).
CIFAR10_FULL = {"dataset": "cifar10", **MODELS["cifar_cpu"], "save_metrics": True}

#: name -> (one-line description, flags). Values as in the specification's commands (docs/TRAINING.md).
PRESETS: dict[str, tuple[str, dict]] = {
    "exp1": ("Experiment 1: CIFAR-10, Fourier features", {
        "experiment_name": "perceiver_cifar10_fourier", "dataset": "cifar10", **MODELS["exp1"],
        "optimizer": "lamb", "lr": 0.004, "scheduler": "multistep", "epochs": 120,
        "batch_size_cifar10": 64, "num_workers": 4, "save_attention_maps": True, "use_tensorboard": True,
    }),
    "exp2": ("Experiment 2: CIFAR-10, permuted pixels, learned positional encoding", {
        "experiment_name": "perceiver_cifar10_permuted_learned_pe", "dataset": "cifar10", **MODELS["exp2"],
        "permute_pixels": True, "permute_pixels_seed": 42, "optimizer": "lamb", "lr": 0.004, "scheduler": "multistep",
        "epochs": 120, "batch_size_cifar10": 64, "num_workers": 4, "save_attention_maps": True,
        "attention_save_interval": 10, "save_metrics": True, "use_tensorboard": True,
    }),
    "exp3": ("Experiment 3: ModelNet40 point clouds, Fourier features", {
        "experiment_name": "perceiver_modelnet40_fourier", "dataset": "modelnet40", "modelnet40_num_points": 2048,
        **MODELS["exp3"], "optimizer": "lamb", "lr": 0.001,
        "scheduler": "multistep", "epochs": 120, "batch_size_modelnet40": 8, "num_workers": 0,
        "save_attention_maps": True, "attention_save_interval": 10, "save_metrics": True, "use_tensorboard": True,
    }),
    "cifar10_10min": ("CIFAR-10 in 10 CPU-minutes: a small model (0.57 M parameters, 16 latents), 600 s", {
        "experiment_name": "cifar10_10min", **CIFAR10_FULL, "crop_padding": 0, "max_time": 600}),
    "cifar10_1h": ("CIFAR-10 in one CPU-hour: the 10-minute recipe with 64 latents and the random crop, compiled, "
                   "3600 s", {
        # 64 latents: given the hour on validation images, 32 latents tied with them and 16 overfit; compiled: the
        # same model, about a tenth more samples in the hour (docs/RECIPES.md)
        "experiment_name": "cifar10_1h", **CIFAR10_FULL, "num_latents": 64, "crop_padding": 4, "max_time": 3600,
        "compile": True}),
    "quickstart": ("the README's quick start: built-in shapes2d, a small model, 24 epochs (about a minute on one "
                   "CPU thread)", {
        "experiment_name": "quickstart", "dataset": "shapes2d", "epochs": 24, **MODELS["small"], "threads": 1,
        # not the paper's recipe: a fixed number of epochs (the steps every seed needs, whatever the machine's load),
        # batches from memory (faster steps), AdamW, the slightly smaller init and MLPs 4 wide start and learn more
        # reliably on this small model (docs/RECIPES.md)
        "device_data": "on", "optimizer": "adamw", "lr": 0.002, "init": "trunc_fan_in", "mlp_ratio": 4.0,
        "save_attention_maps": True, "save_metrics": True,
    }),
}


def preset_flags(name: str) -> dict:
    return dict(PRESETS[name][1])


def describe() -> str:
    """One line per preset, for --help."""
    return "; ".join(f"{name}: {text}" for name, (text, _) in PRESETS.items())


