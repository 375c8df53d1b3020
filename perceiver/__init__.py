"""perceiver: a research toolkit for the Perceiver (Jaegle et al., ICML 2021, arXiv 2103.03206).

The model on your own tensors: tokens ``x`` (B, N, C) and positions ``pos`` in [-1, 1], (N, D) shared by the
batch or (B, N, D) per sample.

>>> import torch
>>> from perceiver import Perceiver, PerceiverConfig, grid_positions
>>> config = PerceiverConfig(in_channels=3, num_classes=10, pos_dim=2, fourier_bands=8, num_latents=16,
...                          latent_dim=32, num_cross_attend_stages=1, num_transformer_blocks=1, num_heads=2)
>>> model = Perceiver(config).eval()
>>> x = torch.rand(4, 32 * 32, 3)          # four 32x32 RGB images, one token per pixel
>>> pos = grid_positions(32, 32)           # (1024, 2) row-major pixel positions
>>> model(x, pos).shape
torch.Size([4, 10])

A trained run (``python train.py --preset quickstart`` writes ``logs/quickstart``) on an image file:

>>> from perceiver import load_model, prepare_input
>>> loaded = load_model("logs/quickstart")                 # doctest: +SKIP
>>> x, pos = prepare_input("my_image.png", loaded.facts)   # doctest: +SKIP
>>> loaded.model(x, pos).softmax(-1).shape                 # doctest: +SKIP
torch.Size([1, 10])

`prepare_input` needs only the facts of the training data, so it also works with facts of your own:

>>> from perceiver import InputFacts
>>> facts = InputFacts(dataset="mine", kind="image", class_names=["a", "b"], image_shape=(32, 32, 3),
...                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
>>> x, pos = prepare_input(torch.rand(3, 48, 64), facts)   # float (C, H, W) in [0, 1]: cropped and resized
>>> tuple(x.shape), tuple(pos.shape)
((1, 1024, 3), (1024, 2))

Command line: ``python -m perceiver.predict --run_dir logs/quickstart a.png b.png`` prints each file's class.
The names are imported on first use, so ``import perceiver.rundir`` (the visualizers) does not load torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Perceiver": "model",
    "PerceiverConfig": "config",
    "FourierEncoding": "position",
    "LearnedEncoding": "position",
    "fourier_features": "position",
    "grid_positions": "position",
    "load_model": "inference",
    "prepare_input": "inference",
    "InputFacts": "inference",
    "LoadedModel": "inference",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
