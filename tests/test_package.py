"""The installable package: its public API (with the docstring example run as a doctest), `load_model` on a run
directory and on a checkpoint file, `prepare_input` on every input form, and the wheel that `pip install .` builds
(its files, and that it imports from outside the repository)."""
import doctest
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import perceiver
from conftest import REPO, bundle_of, run_train_in
from perceiver import InputFacts, Perceiver, PerceiverConfig, load_model, prepare_input
from perceiver.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    out = {}
    for name, extra in (("plain", []), ("permuted", ["--permute_pixels", "--permute_pixels_seed", "7"])):
        res = run_train_in(logs, ["--epochs", "1", "--limit_train_batches", "2", *extra], name=name)
        assert res.code == 0, res.err
        out[name] = res.run_dir
    return out


def test_public_api_and_docstring_example():
    for name in ("Perceiver", "PerceiverConfig", "load_model", "prepare_input", "InputFacts", "FourierEncoding",
                 "LearnedEncoding", "fourier_features", "grid_positions"):
        assert name in perceiver.__all__ and getattr(perceiver, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        perceiver.nope
    result = doctest.testmod(perceiver, verbose=False)
    assert result.attempted >= 8 and result.failed == 0


def test_visualizer_modules_still_do_not_import_torch():
    code = "import sys, perceiver, perceiver.rundir, perceiver.viz.reports; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_load_model_from_run_directory_and_checkpoint_file(runs, tmp_path):
    run = runs["plain"]
    loaded = load_model(run)
    cfg = json.loads((run / "config.json").read_text())
    assert isinstance(loaded.model, Perceiver) and not loaded.model.training
    assert loaded.config == PerceiverConfig.from_dict(cfg["model"]) and loaded.model.config == loaded.config
    # no validation split: no best.pt, the run's model is its last epoch
    assert loaded.checkpoint == run / "checkpoints" / "last.pt" and loaded.run_dir == run and loaded.epoch == 1
    bundle = bundle_of(run)
    f = loaded.facts
    assert f.kind == "image" and f.class_names == bundle.class_names and f.image_shape == (32, 32, 3)
    assert f.mean == pytest.approx(bundle.mean) and f.std == pytest.approx(bundle.std) and f.permutation is None
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key

    # a checkpoint file in its run directory reads the run's facts; one moved away rebuilds them from its args
    last = load_model(run / "checkpoints" / "last.pt")
    assert last.run_dir == run and last.facts == f
    alone = tmp_path / "model.pt"
    shutil.copy(run / "checkpoints" / "last.pt", alone)
    moved = load_model(alone)
    assert moved.run_dir is None and moved.facts.class_names == f.class_names
    assert moved.facts.mean == pytest.approx(f.mean, abs=1e-12) and moved.facts.image_shape == f.image_shape
    # a run directory that lost its config.json: the same, from the checkpoint's arguments
    bare = tmp_path / "bare"
    shutil.copytree(run / "checkpoints", bare / "checkpoints")
    no_config = load_model(bare)
    assert no_config.run_dir == bare and no_config.facts.class_names == f.class_names


def test_permuted_run_facts_carry_the_permutation(runs, tmp_path):
    loaded = load_model(runs["permuted"])
    bundle = bundle_of(runs["permuted"])
    assert torch.equal(loaded.facts.permutation, bundle.permutation)
    alone = tmp_path / "perm.pt"
    shutil.copy(runs["permuted"] / "checkpoints" / "last.pt", alone)
    assert torch.equal(load_model(alone).facts.permutation, bundle.permutation)
    x, pos = prepare_input(bundle.test.images[3], loaded.facts)
    assert torch.equal(x[0], bundle.test[3][0]) and torch.equal(pos, bundle.positions)


def test_load_model_errors_are_one_line(tmp_path, runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    unstarted = tmp_path / "unstarted"
    (unstarted / "checkpoints").mkdir(parents=True)
    (unstarted / "config.json").write_text("{}")
    for path, message in ((tmp_path / "missing", "no such run directory or checkpoint file"),
                          (empty, "holds no training run"), (broken, "is corrupt or not a train.py checkpoint"),
                          (unstarted, "has no checkpoint yet")):
        with pytest.raises(CheckpointError, match=message) as e:
            load_model(path)
        assert "\n" not in str(e.value)


def test_prepare_input_image_forms(runs):
    loaded = load_model(runs["plain"])
    bundle = bundle_of(runs["plain"])
    image = bundle.test.images[0]  # uint8 (32, 32, 3)
    want = bundle.test[0][0]
    forms = [image, torch.from_numpy(image), Image.fromarray(image),
             torch.from_numpy(image).permute(2, 0, 1).float() / 255]  # torchvision's to_tensor convention
    for form in forms:
        x, pos = prepare_input(form, loaded.facts)
        assert x.shape == (1, 1024, 3) and x.dtype == torch.float32 and torch.equal(x[0], want)
        assert torch.equal(pos, bundle.positions)
    # grayscale is repeated into the run's channels; another size is centre-cropped and resized
    gray = image[..., 1]
    assert torch.equal(prepare_input(gray, loaded.facts)[0], prepare_input(np.stack([gray] * 3, -1), loaded.facts)[0])
    wide = Image.fromarray(np.concatenate([np.zeros((64, 32, 3), np.uint8), np.kron(image, np.ones((2, 2, 1),
                                           np.uint8)), np.zeros((64, 32, 3), np.uint8)], axis=1))  # (64, 128)
    x, _ = prepare_input(wide, loaded.facts)
    assert (x[0] - want).abs().mean() < 0.1  # the black side bars are cropped away and the 2x upscale undone
    squashed = prepare_input(wide.resize((32, 32)), loaded.facts)[0]
    assert (squashed[0] - want).abs().mean() > 0.5
    x, _ = prepare_input(torch.from_numpy(image).permute(2, 0, 1).float() / 255, loaded.facts, device="cpu")
    assert x.device.type == "cpu"
    for bad, message in ((np.zeros((32, 32, 4), np.uint8), "an image must be uint8"),
                         (torch.full((3, 8, 8), 2.0), r"values in \[0, 1\]"),
                         (np.zeros((32, 3), np.float32), "an image must be")):
        with pytest.raises(InputError, match=message):
            prepare_input(bad, loaded.facts)


def test_prepare_input_point_cloud_forms():
    facts = InputFacts(dataset="mine", kind="pointcloud", class_names=["a", "b"], num_points=64)
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(200, 6)).astype(np.float32)  # xyz + normals: only xyz is used
    x, pos = prepare_input(cloud, facts)
    assert x.shape == (1, 64, 3) and pos is x
    assert torch.allclose(x[0].mean(0), torch.zeros(3), atol=1e-6) and x[0].norm(dim=1).max() == pytest.approx(1)
    assert torch.equal(prepare_input(torch.from_numpy(cloud[:, :3]), facts)[0], x)  # the same fixed subset
    x, _ = prepare_input(cloud[:10], facts)  # fewer points than trained with: all kept
    assert x.shape == (1, 10, 3)
    for bad, message in ((np.zeros((5, 2)), "must be numbers of shape"), (np.full((4, 3), np.nan), "NaN")):
        with pytest.raises(InputError, match=message):
            prepare_input(bad, facts)


@pytest.mark.slow
def test_wheel_holds_the_package_and_imports_outside_the_repository(tmp_path):
    """What `pip install .` installs: build the wheel from a copy of the sources (no build files left in the
    repository), check its files and metadata, install it without dependencies into a folder and import it from
    there with the repository off the path (the torch of the running interpreter is reused)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "perceiver", src / "perceiver", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("perceiver_toolkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "perceiver").rglob("*")
               if p.is_file() and (p.suffix == ".py" or (p.parent.name == "viz" and p.suffix in (".js", ".css",
                                                                                              ".json")))}
    assert sources and sources <= names, sorted(sources - names)
    assert not any(n.startswith(("tests/", "benchmarks/", "train.py")) for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "Name: perceiver-toolkit" in meta and "Requires-Dist: torch>=2.14" in meta
    assert 'Requires-Dist: pytest>=7.0; extra == "test"' in meta and "Requires-Python: >=3.10" in meta
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    assert "perceiver-predict = perceiver.predict:main" in entry

    site = tmp_path / "site"
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code = ("import perceiver; from perceiver import Perceiver, PerceiverConfig, load_model, prepare_input; "
            "import torch; m = Perceiver(PerceiverConfig(num_latents=4, latent_dim=16, num_cross_attend_stages=1, "
            "num_transformer_blocks=1, num_heads=2, fourier_bands=2)); "
            "print(perceiver.__file__); print(*m(torch.rand(1, 9, 3), perceiver.grid_positions(3, 3)).shape, sep='x')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=outside, timeout=300,
                         env={**env, "PYTHONPATH": str(site)})
    assert res.returncode == 0, res.stderr[-2000:]
    where, shape = res.stdout.split()
    assert where.startswith(str(site)) and shape == "1x10"
    res = subprocess.run([sys.executable, "-m", "perceiver.predict", "--help"], capture_output=True, text=True,
                         cwd=outside, timeout=300, env={**env, "PYTHONPATH": str(site)})
    assert res.returncode == 0 and "--run_dir RUN" in res.stdout


def test_facts_of_a_checkpoint_without_its_run_directory(tmp_path):
    """CIFAR-10 and ModelNet40 checkpoints away from their run: the facts come from the stored arguments, class names
    from --data_dir when the dataset is there, else the official CIFAR-10 names / numbered ModelNet40 classes."""
    import pickle

    from perceiver.data import cifar10
    from perceiver.inference import facts_from_args

    image = PerceiverConfig(num_classes=10)
    args = {"dataset": "cifar10", "data_dir": str(tmp_path / "none"), "permute_pixels": True,
            "permute_pixels_seed": 5}
    facts = facts_from_args(args, image)
    assert facts.class_names == list(cifar10.CLASS_NAMES) and facts.image_shape == (32, 32, 3)
    assert facts.mean == cifar10.MEAN and facts.std == cifar10.STD
    assert torch.equal(facts.permutation, torch.randperm(1024, generator=torch.Generator().manual_seed(5)))
    meta = tmp_path / "data" / cifar10.FOLDER / cifar10.META_FILE
    meta.parent.mkdir(parents=True)
    meta.write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    facts = facts_from_args({**args, "data_dir": str(tmp_path / "data"), "permute_pixels": False}, image)
    assert facts.class_names == [f"c{i}" for i in range(10)] and facts.permutation is None

    cloud = PerceiverConfig(num_classes=3, pos_dim=3)
    args = {"dataset": "modelnet40", "data_dir": str(tmp_path / "none"), "modelnet40_num_points": 512}
    with pytest.warns(UserWarning, match="classes are shown by number"):
        facts = facts_from_args(args, cloud)
    assert facts.class_names == ["0", "1", "2"] and facts.num_points == 512 and facts.kind == "pointcloud"
    facts = facts_from_args({**args, "modelnet40_classes": ["chair", "desk", "lamp"]}, cloud)
    assert facts.class_names == ["chair", "desk", "lamp"]
