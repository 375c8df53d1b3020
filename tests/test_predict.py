"""python -m perceiver.predict: a run's own test images saved as PNG get exactly the logits evaluation computed for
them (plain, permuted with a learned encoding, point clouds from .npy and .txt), one line per file, bad files
reported one line each while the others are classified, --topk, --save_attention, flag errors."""
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, _subprocess_env, bundle_of, run_train_in
from perceiver import load_model, prepare_input
from perceiver.predict import main as predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    out = {}
    for name, extra in (("plain", []),
                        ("permuted", ["--permute_pixels", "--permute_pixels_seed", "3", "--use_learned_pe"]),
                        ("points", ["--dataset", "shapes3d", "--shapes_num_points", "48"])):
        res = run_train_in(logs, ["--epochs", "1", *extra], name=name)
        assert res.code == 0, res.err
        out[name] = res.run_dir
    return out


def run_predict(argv, capsys):
    code = predict([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def expected_line(path, logits, names, k=1):
    probs = torch.softmax(logits.float(), -1)
    top = torch.topk(probs, k)
    return f"{path}: " + ", ".join(f"{names[i]} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))


@pytest.mark.parametrize("name", ["plain", "permuted"])
def test_test_images_as_png_get_the_evaluation_logits(runs, tmp_path, capsys, name):
    run = runs[name]
    bundle = bundle_of(run)
    loaded = load_model(run)
    model = loaded.model
    positions = bundle.positions
    files, want = [], []
    for i in range(4):
        path = tmp_path / f"test_{i}.png"
        Image.fromarray(bundle.test.images[i]).save(path)
        x_data = bundle.test[i][0].unsqueeze(0)  # what evaluation fed the model
        with torch.no_grad():
            logits = model(x_data, positions)[0]
            x, pos = prepare_input(path, loaded.facts)
            assert torch.equal(x, x_data) and torch.equal(pos, positions)
            assert torch.equal(model(x, pos)[0], logits)
        files.append(path)
        want.append(expected_line(path, logits, bundle.class_names))
    code, out, err = run_predict(["--run_dir", run, *files], capsys)
    assert code == 0 and err == [] and out == want
    assert all(line.split(": ")[1].split()[0] in bundle.class_names for line in out)


def test_point_clouds_from_npy_and_txt(runs, tmp_path, capsys):
    run = runs["points"]
    bundle = bundle_of(run)
    loaded = load_model(run)
    raw = bundle.test.points[5]  # (48, 3) float32, as stored
    np.save(tmp_path / "cloud.npy", raw)
    np.savetxt(tmp_path / "cloud.txt", raw * 10 + 3, delimiter=",")  # scale and offset are normalised away
    with torch.no_grad():
        logits = loaded.model(bundle.test[5][0].unsqueeze(0), None)[0]
        x, pos = prepare_input(tmp_path / "cloud.npy", loaded.facts)
        assert torch.equal(x[0], bundle.test[5][0])
        assert torch.equal(loaded.model(x, pos)[0], logits)
    dense = np.concatenate([raw, raw * 0.5])  # more points than the run's 48: the evaluation subset is used
    np.save(tmp_path / "dense.npy", dense)
    code, out, err = run_predict(["--run_dir", run, tmp_path / "cloud.npy", tmp_path / "cloud.txt",
                                  tmp_path / "dense.npy", "--topk", "2"], capsys)
    assert code == 0 and err == []
    assert out[0] == expected_line(tmp_path / "cloud.npy", logits, bundle.class_names, k=2)
    assert out[1].split(": ")[1].split()[0] == out[0].split(": ")[1].split()[0]  # same cloud, same class
    assert out[2].startswith(f"{tmp_path / 'dense.npy'}: ")
    assert prepare_input(tmp_path / "dense.npy", loaded.facts)[0].shape == (1, 48, 3)


def test_bad_files_get_one_line_each_and_the_others_are_classified(runs, tmp_path, capsys):
    run = runs["plain"]
    bundle = bundle_of(run)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.kron(bundle.test.images[0], np.ones((3, 2, 1), np.uint8))).save(good, quality=95)  # 96x64
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.zeros((10, 3), np.float32))
    code, out, err = run_predict(["--run_dir", run, tmp_path / "missing.png", fake, good, cloud], capsys)
    assert code == 1
    assert len(out) == 1 and out[0].startswith(f"{good}: ") and out[0].split(": ")[1].split()[0] in bundle.class_names
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "missing.png: no such file" in err[0]
    assert "fake.png is not a readable image" in err[1]
    assert "cloud.npy is a point cloud (.npy) but the model classifies images" in err[2]


def test_topk_and_save_attention(runs, tmp_path, capsys):
    run = runs["plain"]
    bundle = bundle_of(run)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder, i in (("a", 1), ("b", 2)):
        Image.fromarray(bundle.test.images[i]).save(tmp_path / folder / "img.png")
    code, out, err = run_predict(["--run_dir", run, tmp_path / "a" / "img.png", tmp_path / "b" / "img.png",
                                  "--topk", "3", "--save_attention", "--dpi", "40"], capsys)
    assert code == 0, err
    for line in out:
        pairs = [item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", ")]
        probs = [float(p) for _, p in pairs]
        assert len(pairs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.001
        assert all(cls in bundle.class_names for cls, _ in pairs)
    for stem in ("img_attention.png", "img_2_attention.png"):  # the same name twice: both figures kept
        figure = run / "plots" / "predict" / stem
        assert figure.stat().st_size > 10_000
        assert mpimg.imread(str(figure))[..., :3].std() > 0.05
    out_dir = tmp_path / "figs"
    assert run_predict(["--run_dir", runs["points"], "--save_attention", "--save_dir", out_dir, "--dpi", "40",
                        *[_save_cloud(tmp_path, runs["points"])]], capsys)[0] == 0
    assert (out_dir / "c_attention.png").stat().st_size > 10_000


def _save_cloud(tmp_path, run):
    path = tmp_path / "c.npy"
    np.save(path, bundle_of(run).test.points[0])
    return path


@pytest.mark.parametrize("argv, message", [
    (["a.png"], "the following arguments are required: --run_dir"),
    (["--run_dir", "x", "a.png", "--topk", "0"], "--topk must be at least 1"),
    (["--run_dir", "x", "a.png", "--alpha", "2"], "--alpha must be between 0 and 1"),
    (["--run_dir", "x", "a.png", "--save_dir", "d"], "add --save_attention"),
    (["--run_dir", "x", "a.png", "--colormap", "rainbow"], "--colormap 'rainbow' is not one of"),
])
def test_bad_flags_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        predict(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_missing_run_is_one_line_exit_1_from_the_real_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "perceiver.predict", "--run_dir", str(tmp_path / "nope"),
                           "a.png"], capture_output=True, text=True, cwd=REPO, env=_subprocess_env(), timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory or checkpoint file"


# ------------------------------------------------------------------------ what can be wrong with a file


def png_header_only(path, width, height):
    """A PNG that declares width x height 8-bit grey pixels but holds next to no data: a decompression bomb's
    header (Pillow decides at the header, before decoding)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(30000, 30000), (10000, 10000)])  # over Pillow's error / warning limit
def test_too_many_pixels_is_one_line_with_the_limit_and_the_others_are_classified(runs, tmp_path, capsys, width,
                                                                                  height):
    run = runs["plain"]
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, width, height)
    assert bomb.stat().st_size < 200
    good = tmp_path / "good.png"
    Image.fromarray(bundle_of(run).test.images[0]).save(good)
    code, out, err = run_predict(["--run_dir", run, bomb, good], capsys)
    assert code == 1
    assert len(out) == 1 and out[0].startswith(f"{good}: ")
    assert err == [f"error: {bomb} is too large to read: {width * height:,} pixels, over the limit of "
                   f"{Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's guard against decompression bombs); shrink it first"]


def _gradient16():
    return (np.arange(32 * 32).reshape(32, 32) * 64 + 5).astype(np.uint16)  # 1024 distinct values over 0..65535


HIGH_DEPTH = {  # name -> (write the file, the 8-bit grey image it stands for)
    "png_16bit": (lambda p: Image.fromarray(_gradient16()).save(p.with_suffix(".png")),
                  lambda: np.rint(_gradient16() * (255 / 65535))),
    "tiff_16bit": (lambda p: Image.fromarray(_gradient16()).save(p.with_suffix(".tif")),
                   lambda: np.rint(_gradient16() * (255 / 65535))),
    "tiff_float": (lambda p: Image.fromarray(_gradient16().astype(np.float32) / 65535).save(p.with_suffix(".tif")),
                   lambda: np.rint(_gradient16().astype(np.float32) / 65535 * 255)),
    "tiff_32bit_8bit_values": (lambda p: Image.fromarray((_gradient16() // 257).astype(np.int32)).save(
        p.with_suffix(".tif")), lambda: (_gradient16() // 257).astype(np.float64)),
}


@pytest.mark.parametrize("name", HIGH_DEPTH)
def test_high_depth_images_are_scaled_from_their_full_range(runs, tmp_path, name):
    write, expected = HIGH_DEPTH[name]
    write(tmp_path / "img")
    path = next(tmp_path.glob("img.*"))
    reference = tmp_path / "reference.png"
    grey = expected().astype(np.uint8)
    assert len(np.unique(grey)) > 200  # a clipping conversion would leave a handful
    Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(reference)
    loaded = load_model(runs["plain"])
    x, _ = prepare_input(path, loaded.facts)
    assert torch.equal(x, prepare_input(reference, loaded.facts)[0])


def test_uint16_arrays_are_scaled_too(runs):
    loaded = load_model(runs["plain"])
    rgb16 = np.repeat(_gradient16()[..., None], 3, -1)
    want = np.rint(rgb16 * (255 / 65535)).astype(np.uint8)
    assert torch.equal(prepare_input(rgb16, loaded.facts)[0], prepare_input(want, loaded.facts)[0])


@pytest.mark.parametrize("array,message", [
    (np.linspace(0, 3, 32 * 32, dtype=np.float32).reshape(32, 32),
     "a floating-point image must hold values in [0, 1], got [0, 3]: its white level is unknown"),
    (np.full((32, 32), np.nan, np.float32), "the image holds NaN or infinite values"),
    (np.arange(32 * 32, dtype=np.int32).reshape(32, 32) * 70,
     "a 32-bit integer image (I) with values in [0, 71610]: its white level is unknown"),
])
def test_high_depth_images_without_a_known_white_level_are_refused_in_one_line(runs, tmp_path, capsys, array,
                                                                               message):
    run = runs["plain"]
    bad = tmp_path / "bad.tif"
    Image.fromarray(array).save(bad)
    good = tmp_path / "good.png"
    Image.fromarray(bundle_of(run).test.images[1]).save(good)
    code, out, err = run_predict(["--run_dir", run, bad, good], capsys)
    assert code == 1 and len(out) == 1 and out[0].startswith(f"{good}: ")
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: {message}")


def test_a_folder_stands_for_its_image_files(runs, tmp_path, capsys):
    run = runs["plain"]
    images = bundle_of(run).test.images
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, i in (("b.png", 0), ("a.JPG", 1), ("sub/c.png", 2)):
        Image.fromarray(images[i]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_predict(["--run_dir", run, folder], capsys)
    assert code == 0 and err == []
    assert [line.split(": ")[0] for line in out] == [str(folder / "a.JPG"), str(folder / "b.png")]
    code, out, err = run_predict(["--run_dir", run, empty, folder / "b.png"], capsys)
    assert code == 1 and [line.split(": ")[0] for line in out] == [str(folder / "b.png")]
    assert err == [f"error: {empty} is a folder with no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, "
                   f".webp, .ppm, .pgm) directly in it; pass the files themselves"]


def test_any_other_failure_of_one_file_is_its_own_line(runs, tmp_path, capsys, monkeypatch):
    from perceiver import inference

    run = runs["plain"]
    files = []
    for i in range(3):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(bundle_of(run).test.images[i]).save(files[-1])
    real = inference.read_input_file

    def flaky(path, kind):
        if str(path).endswith("img1.png"):
            raise MemoryError("cannot allocate 12 GB")
        return real(path, kind)

    monkeypatch.setattr(inference, "read_input_file", flaky)
    code, out, err = run_predict(["--run_dir", run, *files], capsys)
    assert code == 1
    assert [line.split(": ")[0] for line in out] == [str(files[0]), str(files[2])]
    assert err == [f"error: {files[1]}: could not be classified (MemoryError: cannot allocate 12 GB)"]
