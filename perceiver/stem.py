"""An optional convolutional stem for image tokens: not the paper's model, an opt-in departure from it.

The Perceiver reads raw pixels, one token per pixel, and owes its vision entirely to attention and positional
features; on a few thousand images that learns slowly (docs/RESULTS.md). Perceiver IO (Jaegle et al.
2022) reports its best ImageNet result without pretraining with a small convolutional preprocessing (a convolution
and a max-pool) in front of the cross-attention. This module is that idea at CIFAR scale, without the
downsampling, kept to what does not change the rest of the model: one ``kernel_size`` x ``kernel_size``
convolution (stride 1, zero padding) and a GELU turn each pixel's colour into ``width`` features of its
neighbourhood. The grid, the number of tokens and their positions are unchanged, so positional features,
attention maps and the visualizers work as without a stem.

    tokens (B, H*W, C) -> image (B, C, H, W) -> conv, GELU (B, width, H, W) -> tokens (B, H*W, width)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvStem(nn.Module):
    def __init__(self, *, in_channels: int, width: int, image_size: tuple[int, int], kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"the stem's kernel_size must be odd and >= 1 (same-size output), got {kernel_size}")
        self.image_size = tuple(image_size)
        self.conv = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, w = self.image_size
        if n != h * w:
            raise ValueError(f"the convolutional stem was built for {h}x{w} images ({h * w} tokens), got {n} tokens")
        image = x.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W): tokens are the pixels in row-major order
        features = F.gelu(self.conv(image))  # (B, width, H, W)
        return features.flatten(2).transpose(1, 2)  # (B, H*W, width)
