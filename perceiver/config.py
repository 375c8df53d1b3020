"""`PerceiverConfig`: every choice that defines a Perceiver (`perceiver/model.py`), checked on construction and
saved with each checkpoint as a plain dict (`to_dict` / `from_dict`).

It is also the one place a model option is declared. A field made with `option(...)` is a train.py flag: its
name, help, choices and default are the field's metadata (`PerceiverConfig.flags()`), train.py's flags of the
model are generated from them, and its checks (`check_options`) reach train.py's user as one-line errors naming
the flag. Adding a model option is one field here. The other fields describe the data (set from the dataset) or
how the speed-ups are pinned (`cross_kernel`, `gelu_recompute`: for the API and the benchmarks).
"""
from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .position import fourier_num_features


def option(default, help: str, *, flag: str | None = None, dest: str | None = None,
           choices: tuple[str, ...] | None = None, group: str = "model", per_dataset: bool = False):
    """A config field that train.py takes as ``--<flag>`` (default: the field's name).

    ``help``: the flag's help; ``(default: %(default)s)`` is added unless it says its default itself. A switch for a
    field that defaults to True is named ``no_<field>``; ``dest`` says where its value is kept (config.json's
    "args"): the field's name keeps the field's value, the flag's name (the default) keeps its negation.
    ``group``: train.py's argument group. ``per_dataset``: the flag defaults to the dataset's value (train.py).
    """
    meta = {"help": help, "flag": flag, "dest": dest, "choices": choices, "group": group, "per_dataset": per_dataset}
    return field(default=default, metadata={"option": meta})


@dataclass(frozen=True)
class Flag:
    """How a `PerceiverConfig` field is typed on train.py's command line (built from its `option` metadata)."""

    field: str
    name: str                    # the flag without "--"
    dest: str                    # where the parsed value is kept (config.json's "args")
    type: type                   # int, float, str, or bool for a switch
    default: Any                 # the field's default
    help: str
    choices: tuple[str, ...] | None
    group: str
    per_dataset: bool

    @property
    def inverted(self) -> bool:
        """A switch whose kept value is the field's negation (``--no_final_norm`` keeps ``no_final_norm``)."""
        return self.dest != self.field

    def field_value(self, value):
        """The field's value for the flag's kept value (and back: the map is its own inverse)."""
        return (not value) if self.inverted else value


class ConfigError(ValueError):
    """A bad option value. ``describe(name)`` words the message with ``name(field)`` for each field it names, so
    train.py can say ``--cross_dim`` where the API says ``cross_dim``."""

    def __init__(self, describe: Callable[[Callable[[str], str]], str]):
        self.describe = describe
        super().__init__(describe(lambda name: name))


@dataclass
class PerceiverConfig:
    in_channels: int = 3
    num_classes: int = 10
    pos_dim: int = 2                     # coordinates per token: 2 for images, 3 for point clouds
    pos_from_input: bool = False         # the first pos_dim channels of x are its positions (point clouds)
    num_tokens: int | None = None        # N; required by the learned positional encoding
    fourier_bands: int = option(
        64, "Fourier bands per coordinate; overrides --cifar10_/--modelnet40_fourier_bands",
        group="data sizes and positional features", per_dataset=True)
    max_freq: float = option(  # samples per axis of [-1, 1]; see perceiver/position.py
        32.0, "highest Fourier frequency (samples over [-1, 1]); overrides the dataset flags",
        group="data sizes and positional features", per_dataset=True)
    use_learned_pe: bool = option(False, "learned positional embedding instead of Fourier features (images only)")
    learned_pe_dim: int | None = None    # default: as wide as the Fourier features, for a like-for-like comparison
    num_latents: int = option(96, "latent array size M")
    latent_dim: int = option(384, "latent width D")
    num_cross_attend_stages: int = option(4, "cross-attend + latent-transformer stages")
    num_transformer_blocks: int = option(4, "self-attention blocks per latent transformer")
    num_heads: int = option(3, "latent self-attention heads")
    cross_heads: int = option(  # the paper uses a single cross-attention head
        1, "cross-attention heads; heads narrower than the position features are about 2.8x slower (the log says so "
           "and how wide --cross_dim must be)")
    cross_dim: int | None = option(  # None: latent_dim
        None, "width of the cross-attention's queries, keys and values (default: %(default)s = --latent_dim)")
    input_norm: bool = option(  # LayerNorm over each [x, position features] token before its projection
        True, "no LayerNorm over each input token [channels, position features] before the key/value projection; "
              "the paper has one, and it learns better (docs/RECIPES_SAMPLE.md) (default: the norm is on)",
        flag="no_input_norm", dest="input_norm")
    stem: str = option(  # "conv": perceiver/stem.py's convolution before the cross-attention
        "none", "conv: a 3x3 convolution and GELU turn each pixel into --stem_width features of its neighbourhood "
                "before the cross-attention (perceiver/stem.py; images only; not the paper's model, which reads raw "
                "pixels)", choices=("none", "conv"))
    stem_width: int = option(32, "features per pixel made by --stem conv")
    image_size: tuple[int, int] | None = None  # (H, W) of image tokens, for the stem (None without one)
    mlp_ratio: float = option(  # MLP hidden width / latent_dim: DeepMind's widening factor
        1.0, "MLP hidden width / D; 1 is DeepMind's widening factor, and learned better in 600 s than 4 "
             "(docs/RECIPES_SAMPLE.md)")
    dropout: float = option(0.0, "dropout rate")
    drop_path: float = option(
        0.0, "stochastic depth: drop rate of the latent blocks' residual branches, rising linearly from 0 to this "
             "value over the distinct blocks")
    output_pooling: str = option(
        "mean", "how latents become one vector: mean, or a learned cls latent", choices=("mean", "cls"))
    final_norm: bool = option(True, "no LayerNorm on the latents before pooling", flag="no_final_norm")
    weight_sharing: bool = option(
        True, "separate weights for every stage (default: %(default)s = stages 2+ share weights)",
        flag="no_weight_sharing")
    init: str = option(  # linear weights: "fan_in" std 1/sqrt(fan_in); "trunc_fan_in" 0.88x that
        "fan_in", "linear-layer init: fan_in = truncated normal with std exactly 1/sqrt(fan_in); trunc_fan_in = "
                  "truncated at 2 std without correcting the std (0.88/sqrt(fan_in))",
        choices=("fan_in", "trunc_fan_in"))
    # --- how the function is computed, not which function: never part of a checkpoint's identity
    kernels: str = option(
        "auto", "auto = exact speed-ups of perceiver/kernels.py; plain = the blocks as written in "
                "perceiver/blocks.py (the same function, slower; the two agree to about the 8th digit, so a run "
                "resumes with its own)", choices=("auto", "plain"), group="runtime")
    cross_kernel: str = "auto"           # with kernels="auto": pin "absorb" | "shared_kv" | "project"
    gelu_recompute: bool = True          # with kernels="auto": the MLP's backward recomputes GELU (less memory)
    activation_checkpointing: bool = option(False, "recompute activations in backward to save memory")

    #: fields that change speed or memory but not the function (a checkpoint's model matches whatever they are; a
    #: resumed run keeps its --kernels all the same, see perceiver.resume.RESUME_OVERRIDES).
    COMPUTE_FIELDS = ("kernels", "cross_kernel", "gelu_recompute", "activation_checkpointing")
    CROSS_KERNELS = ("auto", "absorb", "shared_kv", "project")

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "pos_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        type(self).check_options(asdict(self))
        if self.cross_kernel not in self.CROSS_KERNELS:
            raise ValueError(f"cross_kernel must be one of {', '.join(self.CROSS_KERNELS)}; got {self.cross_kernel!r}")
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)  # a list after a JSON round trip
        if self.stem == "conv" and (self.image_size is None or self.pos_from_input):
            raise ValueError("the convolutional stem is for images: it needs image_size (H, W)")
        if self.use_learned_pe and not self.num_tokens:
            raise ValueError("the learned positional encoding needs num_tokens (the fixed input size)")
        if self.pos_from_input and self.in_channels < self.pos_dim:
            raise ValueError(f"pos_from_input needs at least pos_dim ({self.pos_dim}) input channels")

    @classmethod
    def check_options(cls, o: Mapping[str, Any]) -> None:
        """Raise `ConfigError` for the first option out of its range; ``o``: every option field's value."""
        def fail(describe):
            raise ConfigError(describe)

        for name in ("fourier_bands", "num_latents", "latent_dim", "num_cross_attend_stages", "num_heads",
                     "cross_heads", "cross_dim", "stem_width"):
            if o[name] is not None and o[name] < 1:
                fail(lambda n, name=name: f"{n(name)} must be a positive integer, got {o[name]}")
        if o["num_transformer_blocks"] < 0:
            fail(lambda n: f"{n('num_transformer_blocks')} must be >= 0, got {o['num_transformer_blocks']}")
        for name in ("max_freq", "mlp_ratio"):
            if not (math.isfinite(o[name]) and o[name] > 0):
                fail(lambda n, name=name: f"{n(name)} must be a positive number, got {o[name]}")
        for name in ("dropout", "drop_path"):
            if not 0.0 <= o[name] < 1.0:
                fail(lambda n, name=name: f"{n(name)} must be in [0, 1), got {o[name]}")
        for heads, width in (("num_heads", "latent_dim"), ("cross_heads", "cross_dim" if o["cross_dim"] else
                                                          "latent_dim")):
            w, h = o[width], o[heads]
            if w % h:
                fail(lambda n, heads=heads, width=width, w=w, h=h: f"{n(width)} ({w}) must be divisible by "
                                                                   f"{n(heads)} ({h}); e.g. {n(width)} "
                                                                   f"{h * max(1, w // h)}")
        for flag in cls.flags():
            if flag.choices and o[flag.field] not in flag.choices:
                fail(lambda n, f=flag: f"{n(f.field)} must be one of {', '.join(f.choices)}; got {o[f.field]!r}")

    # ------------------------------------------------------------------------------------ the command line
    @classmethod
    def flags(cls) -> tuple[Flag, ...]:
        """The fields that are train.py flags, in field order."""
        return _flags(cls)

    @classmethod
    def options_from_flags(cls, flags: Mapping[str, Any]) -> dict[str, Any]:
        """``{field: value}`` of the options among parsed flags ``{dest: value}`` (config.json's "args")."""
        return {f.field: f.field_value(flags[f.dest]) for f in cls.flags() if f.dest in flags}

    @classmethod
    def option_flags(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """``{dest: value}``: the flags that give the options of a config dict (`to_dict`) its values."""
        return {f.dest: f.field_value(config[f.field]) for f in cls.flags() if f.field in config}

    # ------------------------------------------------------------------------------------------ derived
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


@functools.cache
def _flags(cls) -> tuple[Flag, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # int | None
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        name = meta["flag"] or f.name
        out.append(Flag(field=f.name, name=name, dest=meta["dest"] or name, type=kind, default=f.default,
                        help=meta["help"], choices=meta["choices"], group=meta["group"],
                        per_dataset=meta["per_dataset"]))
    return tuple(out)
