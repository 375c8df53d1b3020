"""`PerceiverConfig`: every choice that defines a Perceiver (`perceiver/model.py`), checked on construction and
saved with each checkpoint as a plain dict (`to_dict` / `from_dict`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .position import fourier_num_features


@dataclass
class PerceiverConfig:
    in_channels: int = 3
    num_classes: int = 10
    pos_dim: int = 2                     # coordinates per token: 2 for images, 3 for point clouds
    pos_from_input: bool = False         # the first pos_dim channels of x are its positions (point clouds)
    num_tokens: int | None = None        # N; required by the learned positional encoding
    fourier_bands: int = 64
    max_freq: float = 32.0               # samples per axis of [-1, 1]; see perceiver/position.py
    use_learned_pe: bool = False
    learned_pe_dim: int | None = None    # default: as wide as the Fourier features, for a like-for-like comparison
    num_latents: int = 96
    latent_dim: int = 384
    num_cross_attend_stages: int = 4
    num_transformer_blocks: int = 4
    num_heads: int = 3                   # latent self-attention heads
    cross_heads: int = 1                 # the paper uses a single cross-attention head
    cross_dim: int | None = None         # width of the cross-attention's q/k/v; None: latent_dim
    input_norm: bool = True              # LayerNorm over each [x, position features] token before its projection
    stem: str = "none"                   # "conv": perceiver/stem.py's convolution before the cross-attention
    stem_width: int = 32                 # features per pixel the stem makes
    image_size: tuple[int, int] | None = None  # (H, W) of image tokens, for the stem (None without one)
    mlp_ratio: float = 1.0               # MLP hidden width / latent_dim: DeepMind's widening factor
    dropout: float = 0.0
    drop_path: float = 0.0               # stochastic depth of the latent blocks, rising linearly to this rate
    output_pooling: str = "mean"         # "mean" over latents, or "cls": a dedicated learned latent
    final_norm: bool = True              # LayerNorm on the latents before pooling
    weight_sharing: bool = True
    init: str = "fan_in"                 # linear weights: "fan_in" std 1/sqrt(fan_in); "trunc_fan_in" 0.88x that
    # --- how the function is computed, not which function: never part of a checkpoint's identity
    kernels: str = "auto"                # "auto": the exact speed-ups of perceiver/kernels.py; "plain": this file
    cross_kernel: str = "auto"           # with kernels="auto": pin "absorb" | "shared_kv" | "project"
    gelu_recompute: bool = True          # with kernels="auto": the MLP's backward recomputes GELU (less memory)
    activation_checkpointing: bool = False

    #: fields that change speed or memory but not the function: a run may resume with other values.
    COMPUTE_FIELDS = ("kernels", "cross_kernel", "gelu_recompute", "activation_checkpointing")

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "pos_dim", "num_latents", "latent_dim",
                     "num_cross_attend_stages", "num_heads", "cross_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_transformer_blocks < 0:
            raise ValueError(f"num_transformer_blocks must be >= 0, got {self.num_transformer_blocks}")
        if self.cross_dim is not None and self.cross_dim < 1:
            raise ValueError(f"cross_dim must be >= 1, got {self.cross_dim}")
        for name, width, heads in (("num_heads", self.latent_dim, self.num_heads),
                                   ("cross_heads", self.cross_width, self.cross_heads)):
            if width % heads:
                what = "latent_dim" if name == "num_heads" else "the cross-attention width (cross_dim or latent_dim)"
                raise ValueError(f"{what} ({width}) must be divisible by {name} ({heads})")
        choices = {"output_pooling": ("mean", "cls"), "init": ("fan_in", "trunc_fan_in"), "stem": ("none", "conv"),
                   "kernels": ("auto", "plain"), "cross_kernel": ("auto", "absorb", "shared_kv", "project")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)  # a list after a JSON round trip
        if self.stem == "conv" and (self.image_size is None or self.pos_from_input):
            raise ValueError("the convolutional stem is for images: it needs image_size (H, W)")
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be >= 1, got {self.stem_width}")
        if self.use_learned_pe and not self.num_tokens:
            raise ValueError("the learned positional encoding needs num_tokens (the fixed input size)")
        if self.pos_from_input and self.in_channels < self.pos_dim:
            raise ValueError(f"pos_from_input needs at least pos_dim ({self.pos_dim}) input channels")

    @property
    def pe_features(self) -> int:
        fourier = fourier_num_features(self.pos_dim, self.fourier_bands)
        if self.use_learned_pe:
            return self.learned_pe_dim or fourier
        return fourier

    @property
    def token_channels(self) -> int:
        """Channels of each token the cross-attention reads (before its position features)."""
        return self.stem_width if self.stem == "conv" else self.in_channels

    @property
    def cross_width(self) -> int:
        return self.cross_dim or self.latent_dim

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """The fields that define the function (what a checkpoint must match to be resumed)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.COMPUTE_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "PerceiverConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PerceiverConfig fields: {', '.join(unknown)}")
        d = dict(d)
        # Configs saved before these fields existed: point clouds were the only models fed their own
        # coordinates, and linear layers had the uncorrected truncated-normal init.
        d.setdefault("pos_from_input", d.get("pos_dim") == 3)
        d.setdefault("init", "trunc_fan_in")
        d.setdefault("input_norm", False)
        return cls(**d)
