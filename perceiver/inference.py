"""Use a trained model on your own data: `load_model` and `prepare_input`.

`load_model(path)` takes a run directory (``logs/NAME``: its ``checkpoints/best.pt``, else ``last.pt``) or a
checkpoint file, and returns the model in eval mode with the facts about the training data that preparing an
input needs (`InputFacts`: class names, image size and normalisation or point count, pixel permutation).
`prepare_input(data, facts)` turns an image or a point cloud into the model's ``(x, pos)`` exactly the way the
run's test set was served, so a test image saved as a PNG gets the logits evaluation computed for it.

    from perceiver import load_model, prepare_input
    loaded = load_model("logs/quickstart")
    x, pos = prepare_input("my_image.png", loaded.facts)          # (1, H*W, 3) tokens, (H*W, 2) positions
    probs = loaded.model(x, pos).softmax(-1)                  # (1, num_classes)
    print(loaded.facts.class_names[int(probs.argmax())])
    print(loaded.classify("my_image.png", k=3))                    # [(class name, probability), ...]

Inputs (`prepare_input`):

* images: a file (anything Pillow reads), a `PIL.Image`, a uint8 array or tensor (H, W, C) or (H, W) as the
  datasets store them (uint16 too), or a float tensor (C, H, W) in [0, 1] as torchvision's ``to_tensor`` makes them.
  16-bit and floating-point images are scaled from their full range to the 8-bit pixels the models were trained on
  (`eight_bit`); an image of more pixels than Pillow's decompression-bomb limit is refused. An image
  of another size is centre-cropped to the run's aspect ratio and resized (bicubic, antialiased); its pixels are
  normalised with the run's mean/std and permuted when the run permuted pixels. Positions: the pixel grid in
  [-1, 1], permuted with the pixels, (H*W, 2).
* point clouds: a ``.npy`` file or a text file (``.txt``, ``.csv``, ``.xyz``: one point per line, numbers
  separated by spaces or commas) or an array (P, 3+); only the first three columns (x, y, z) are used. More points
  than the run's K are subsampled with the fixed subset evaluation uses; fewer are all kept (Fourier features take
  any number of points). The cloud is centred and scaled into the unit sphere; the positions are its points.

Where the facts come from: the run's ``config.json`` (written when training starts). A checkpoint file away from
its run directory (or a run without its config.json) carries only the training arguments; the facts are rebuilt
from them (built-in datasets are regenerated from their seed; CIFAR-10 and ModelNet40 class names are read from
``--data_dir`` when the files are there).
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, load_model_weights
from .data.images import ImageTokens, grid_positions, pixel_permutation
from .data.points import PointClouds
from .errors import CheckpointError, InputError
from .model import Perceiver, PerceiverConfig
from .rundir import RunDir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
POINT_SUFFIXES = (".npy", ".txt", ".csv", ".xyz", ".pts")


@dataclass
class InputFacts:
    """What preparing an input for a trained model needs to know about the data it was trained on."""

    dataset: str  # e.g. "cifar10"
    kind: str  # "image" | "pointcloud"
    class_names: list[str]
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) for images
    mean: tuple[float, ...] | None = None  # per-channel normalisation, in [0, 1] pixel units (images)
    std: tuple[float, ...] | None = None
    permutation: torch.Tensor | None = None  # (H*W,) long: token i is row-major pixel permutation[i]
    num_points: int | None = None  # K, the points per cloud in training (point clouds)

    @classmethod
    def from_dataset(cls, facts: dict, permute_seed: int | None) -> "InputFacts":
        """From the ``"dataset"`` entry of a run's config.json (`perceiver.components.dataset_facts`)."""
        image = facts["kind"] == "image"
        permutation = None
        if image and facts.get("permuted"):
            if permute_seed is None:
                raise CheckpointError("the run permuted its pixels but its arguments hold no permute_pixels_seed")
            permutation = pixel_permutation(int(facts["num_tokens"]), seed=int(permute_seed))
        return cls(
            dataset=facts["name"], kind=facts["kind"], class_names=[str(c) for c in facts["class_names"]],
            image_shape=tuple(int(v) for v in facts["image_shape"]) if image else None,
            mean=tuple(float(v) for v in facts["mean"]) if image else None,
            std=tuple(float(v) for v in facts["std"]) if image else None,
            permutation=permutation, num_points=None if image else int(facts["num_tokens"]))


@dataclass
class LoadedModel:
    """`load_model`'s result: the model (eval mode) and what is needed to feed it."""

    model: Perceiver
    config: PerceiverConfig
    facts: InputFacts
    checkpoint: Path
    epoch: int  # epochs trained when the checkpoint was saved
    run_dir: Path | None  # the run directory, when the checkpoint sits in one

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """`prepare_input` for this model, on the model's device."""
        return prepare_input(data, self.facts, device=self.device)

    @torch.no_grad()
    def probabilities(self, data) -> torch.Tensor:
        """Class probabilities (num_classes,) for one image or point cloud."""
        x, pos = self.prepare(data)
        return torch.softmax(self.model(x, pos).float(), dim=-1)[0]

    def classify(self, data, k: int = 1) -> list[tuple[str, float]]:
        """The ``k`` most probable classes of one input, as (class name, probability), most probable first."""
        probs = self.probabilities(data)
        top = torch.topk(probs, min(k, probs.numel()))
        return [(self.facts.class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]


# ------------------------------------------------------------------------------------------------- load_model


def locate_checkpoint(path: str | os.PathLike) -> tuple[Path, RunDir | None]:
    """(checkpoint file, its run directory or None) for a run directory or a checkpoint path."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for candidate in (run.best_checkpoint, run.last_checkpoint):
            if candidate.is_file():
                return candidate, run
        if not run.holds_run():
            raise CheckpointError(f"{path} holds no training run (no config.json or checkpoints/); pass a run "
                                  f"directory such as logs/NAME, or a checkpoint file")
        raise CheckpointError(f"{path} has no checkpoint yet (checkpoints/best.pt or last.pt): the run saves its "
                              f"first one at the end of epoch 1")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    run = RunDir(path.parent.parent) if path.parent.name == "checkpoints" else None
    return path, run if run is not None and run.holds_run() else None


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a trained model from a run directory (its best checkpoint) or a checkpoint file, in eval mode.

    Raises `perceiver.errors.CheckpointError` (one line naming the file) for a missing, corrupt or foreign file.
    """
    checkpoint, run = locate_checkpoint(path)
    state = load_checkpoint(checkpoint, map_location=device)  # its model configuration checked there
    config = PerceiverConfig.from_dict(state["model_config"])
    model = Perceiver(config)
    load_model_weights(checkpoint, model, state)
    model.to(device).eval()
    args = dict(state["args"])
    if run is not None and run.config_path.is_file():
        try:
            run_config = run.read_config()
            facts = InputFacts.from_dataset(run_config["dataset"], run_config.get("args", args).get(
                "permute_pixels_seed"))
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{run.config_path} does not describe the run's data ({type(e).__name__}: "
                                  f"{e}); load the checkpoint file itself instead") from None
    else:
        facts = facts_from_args(args, config)
    check_facts(facts, config, checkpoint)
    return LoadedModel(model=model, config=config, facts=facts, checkpoint=checkpoint, epoch=int(state["epoch"]),
                       run_dir=run.path if run is not None else None)


def facts_from_args(args: dict, config: PerceiverConfig) -> InputFacts:
    """The data facts of a checkpoint file without its run directory, rebuilt from its training arguments."""
    from .components import dataset_facts
    from .data import DataSettings, build_dataset

    name = args.get("dataset")
    seed = args.get("permute_pixels_seed")
    if name in ("shapes2d", "shapes3d"):  # generated from the seed in a second: rebuild it exactly
        bundle = build_dataset(DataSettings.from_flags(args))
        return InputFacts.from_dataset(dataset_facts(bundle, bundle.train, None, bundle.test), seed)
    if name == "cifar10":
        from .data import cifar10

        names = list(cifar10.CLASS_NAMES)
        meta = Path(args.get("data_dir", "")) / cifar10.FOLDER / cifar10.META_FILE
        if meta.is_file():
            try:
                names = cifar10.read_class_names(meta)
            except Exception:  # noqa: BLE001 - a damaged meta file: the official names are the same list
                pass
        return InputFacts.from_dataset({
            "name": name, "kind": "image", "class_names": names, "num_tokens": 32 * 32, "image_shape": [32, 32, 3],
            "permuted": bool(args.get("permute_pixels")), "mean": cifar10.MEAN, "std": cifar10.STD}, seed)
    if name == "modelnet40":
        from .data import modelnet40

        names_file = Path(args.get("data_dir", "")) / modelnet40.FOLDER / modelnet40.NAMES_FILE
        names = None
        if args.get("modelnet40_classes"):
            names = list(args["modelnet40_classes"])
        elif names_file.is_file():
            names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if names is None or len(names) != config.num_classes:
            warnings.warn(f"class names of this modelnet40 checkpoint not found ({names_file} is missing): classes "
                          f"are shown by number", stacklevel=3)
            names = [str(i) for i in range(config.num_classes)]
        return InputFacts.from_dataset({
            "name": name, "kind": "pointcloud", "class_names": names,
            "num_tokens": int(args.get("modelnet40_num_points", 2048))}, None)
    raise CheckpointError(f"the checkpoint's arguments name no known dataset ({name!r})")


def check_facts(facts: InputFacts, config: PerceiverConfig, checkpoint: Path) -> None:
    """The data facts must describe what the model was built for (a run directory reused for another model)."""
    problems = []
    if len(facts.class_names) != config.num_classes:
        problems.append(f"{len(facts.class_names)} class names for {config.num_classes} classes")
    if (facts.kind == "image") != (config.pos_dim == 2):
        problems.append(f"{facts.kind} data for a model with {config.pos_dim}-D positions")
    if facts.kind == "image" and facts.image_shape[2] != config.in_channels:
        problems.append(f"{facts.image_shape[2]} image channels for a model of {config.in_channels}")
    if problems:
        raise CheckpointError(f"checkpoint {checkpoint} does not match its run's config.json ({'; '.join(problems)})")


# ---------------------------------------------------------------------------------------------- prepare_input


def prepare_input(data, facts: InputFacts, *, device: str | torch.device | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, pos)`` for ``model(x, pos)`` from one image or point cloud (see the module docstring).

    Images: x (1, H*W, C), pos (H*W, 2). Point clouds: x (1, K, 3), pos (1, K, 3) (the points themselves).
    Raises `perceiver.errors.InputError` (a ValueError) naming what is wrong with the input.
    """
    x = input_dataset(data, facts)[0][0].unsqueeze(0)  # (1, N, C)
    pos = x if facts.kind == "pointcloud" else image_positions(facts)
    if device is not None:
        x, pos = x.to(device), pos.to(device)
    return x, pos


def image_positions(facts: InputFacts) -> torch.Tensor:
    """(H*W, 2) pixel positions in [-1, 1] in the order of the tokens (permuted with the pixels)."""
    h, w = facts.image_shape[:2]
    pos = grid_positions(h, w)  # (H*W, 2), row-major like the pixels
    return pos[facts.permutation] if facts.permutation is not None else pos


def input_dataset(data, facts: InputFacts) -> ImageTokens | PointClouds:
    """A one-item dataset serving ``data`` exactly like the run's test set (the same classes do the work); its
    label is -1 (unknown)."""
    if isinstance(data, (str, os.PathLike)):
        data = read_input_file(data, facts.kind)
    unknown = np.full(1, -1, dtype=np.int64)
    if facts.kind == "image":
        image = image_array(data, facts.image_shape)
        return ImageTokens(image[None], unknown, mean=facts.mean, std=facts.std, permutation=facts.permutation)
    points = points_array(data)
    return PointClouds(points[None], unknown, num_points=min(facts.num_points, len(points)), train=False)


def read_input_file(path: str | os.PathLike, kind: str):
    """A `PIL.Image` (image files) or a float32 (P, 3+) array (point-cloud files)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix in POINT_SUFFIXES:
        if kind == "image":
            raise InputError(f"{path} is a point cloud ({suffix}) but the model classifies images")
        return _read_points(path)
    if kind == "pointcloud":
        raise InputError(f"{path} is not a point cloud file ({', '.join(POINT_SUFFIXES)}); the model classifies "
                         f"point clouds")
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse at Pillow's first limit
            with Image.open(path) as img:
                img.load()
                return img.copy()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels, " if found else ""
        raise InputError(f"{path} is too large to read: {size}over the limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                         f"(Pillow's guard against decompression bombs); shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable image ({type(e).__name__}: {e})") from None


def _read_points(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        text = path.read_text().replace(",", " ")
        return np.loadtxt(io.StringIO(text), dtype=np.float32, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"{path} is not a readable point cloud ({type(e).__name__}: {e})") from None


def image_array(data, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (H, W, C) of the run's image shape from a PIL image, a uint8 (H, W[, C]) or float (C, H, W) array."""
    from PIL import Image

    h, w, c = shape
    if isinstance(data, Image.Image):
        image = eight_bit(data, c)
    else:
        arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        if arr.dtype == np.uint16 and arr.ndim in (2, 3):  # 16 bits: scaled from their full range
            arr = np.rint(arr * (255 / 65535)).astype(np.uint8)
        if arr.dtype == np.uint8 and arr.ndim == 2:
            arr = np.repeat(arr[..., None], c, axis=-1)
        elif arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == c:
            pass
        elif np.issubdtype(arr.dtype, np.floating) and arr.ndim == 3 and arr.shape[0] == c:
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise InputError(f"a float image must hold values in [0, 1] (torchvision's to_tensor), got "
                                 f"[{arr.min():.3g}, {arr.max():.3g}]")
            arr = np.rint(arr.transpose(1, 2, 0) * 255).astype(np.uint8)  # (H, W, C)
        else:
            raise InputError(f"an image must be uint8 or uint16 (H, W, {c}) or (H, W), or float ({c}, H, W) in [0, 1]; "
                             f"got {arr.dtype} {tuple(arr.shape)}")
        if arr.shape[:2] == (h, w):
            return np.array(arr, dtype=np.uint8)
        image = Image.fromarray(arr[..., 0] if c == 1 else arr)
    arr = np.array(fit_image(image, w, h), dtype=np.uint8)  # a writable copy: torch wraps it without copying
    return arr[..., None] if arr.ndim == 2 else arr


def eight_bit(image, channels: int):
    """An 8-bit "L" (``channels`` 1) or "RGB" copy of a Pillow image, the pixels the models were trained on.

    16-bit images are scaled from their full range (0..65535 -> 0..255; a plain ``convert`` would clip them at 255)
    and floating-point ones from [0, 1]. A 32-bit integer image holding values above 255, or a float image outside
    [0, 1], has no known white level and is refused (`InputError`), as is one holding NaN or infinite values.
    """
    from PIL import Image

    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(image)
        if not np.isfinite(arr).all():
            raise InputError("the image holds NaN or infinite values")
        low, high = (arr.min(), arr.max()) if arr.size else (0, 0)
        if mode.startswith("I;16") and arr.dtype.kind == "u":
            arr = arr * (255 / 65535)
        elif mode == "F" and 0 <= low and high <= 1:
            arr = arr * 255.0
        elif mode == "F":
            raise InputError(f"a floating-point image must hold values in [0, 1], got [{low:.4g}, {high:.4g}]: its "
                             f"white level is unknown; save it as an 8- or 16-bit image")
        elif not (0 <= low and high <= 255):
            raise InputError(f"a {arr.dtype.itemsize * 8}-bit integer image ({mode}) with values in [{low}, {high}]: "
                             f"its white level is unknown; save it as an 8- or 16-bit image")
        image = Image.fromarray(np.rint(arr).astype(np.uint8))  # "L"
    return image.convert("L" if channels == 1 else "RGB")


def fit_image(image, width: int, height: int):
    """Centre-crop ``image`` to the aspect ratio width:height, then resize it to width x height (bicubic)."""
    from PIL import Image

    if image.size == (width, height):
        return image
    iw, ih = image.size
    if iw * height > ih * width:  # too wide: crop the sides
        cw = max(1, round(ih * width / height))
        image = image.crop(((iw - cw) // 2, 0, (iw - cw) // 2 + cw, ih))
    elif iw * height < ih * width:  # too tall: crop top and bottom
        ch = max(1, round(iw * height / width))
        image = image.crop((0, (ih - ch) // 2, iw, (ih - ch) // 2 + ch))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def points_array(data) -> np.ndarray:
    """float32 (P, 3): the x, y, z columns of a (P, 3+) array or tensor."""
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] < 3 or len(arr) < 1 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"a point cloud must be numbers of shape (P, 3) (x, y, z; extra columns are ignored), "
                         f"got {arr.dtype} {tuple(arr.shape)}")
    points = np.ascontiguousarray(arr[:, :3], dtype=np.float32)
    if not np.isfinite(points).all():
        raise InputError("the point cloud holds NaN or infinite coordinates")
    return points
