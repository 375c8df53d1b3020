"""Data files cannot run code.

A tampered CIFAR-10 pickle that calls os.system (or eval, or subprocess) is refused with one line naming the file
and what it asked for, and the command never runs; the real files and numpy re-pickles in every protocol still
load. ModelNet40 h5 files are read as plain numbers only; a tar archive cannot write outside the data folder. A
source check fails if anyone adds an unsafe load (pickle, torch.load without weights_only=True, allow_pickle=True,
...) to the package or the scripts.
"""
import ast
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, run_train_in
from perceiver.data import cifar10, modelnet40
from perceiver.data.download import fetch_archive
from perceiver.errors import DataError
from data_files import write_cifar, write_modelnet

SAMPLE = Path("/work/shared/data/cifar-10-batches-py")


# ------------------------------------------------------------------------------------------ tampered pickles


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def evil_batch(kind: str, marker: Path) -> bytes:
    """A protocol-2 pickle of a CIFAR-looking dict whose 'data' entry runs a command when the file is loaded."""
    cmd = f"touch {marker}"
    if kind == "os.system":
        call = _global("os", "system") + b"(" + pickle.dumps(cmd, protocol=2)[2:-1] + b"tR"
    elif kind == "builtins.eval":
        code = f"__import__('os').system({cmd!r})"
        call = _global("builtins", "eval") + b"(" + pickle.dumps(code, protocol=2)[2:-1] + b"tR"
    else:  # subprocess.call(['touch', marker]), written by pickle itself through __reduce__
        class Payload:
            def __reduce__(self):
                return subprocess.call, (["touch", str(marker)],)

        return pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2, fix_imports=False)
    # {b"data": <call>, b"labels": [0]}
    return (b"\x80\x02}(" + pickle.dumps(b"data", protocol=2)[2:-1] + call
            + pickle.dumps(b"labels", protocol=2)[2:-1] + b"]K\x00au.")


KINDS = ["os.system", "builtins.eval", "subprocess.call"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_crafted_file_really_runs_code_under_plain_pickle(tmp_path, kind):
    """The control: what the loader used to do (pickle.load) runs the command. In a child process."""
    marker = tmp_path / "ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(evil_batch(kind, marker))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'), encoding='bytes')"],
                   capture_output=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_batch_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(evil_batch(kind, marker))
    with pytest.raises(DataError) as e:
        cifar10.read_batch(path)
    assert str(e.value) == (f"the CIFAR-10 reader refuses to load {path}: it asks for {kind}, which a CIFAR-10 "
                            f"file never holds; the file was tampered with or is not CIFAR-10 (delete it and "
                            f"download CIFAR-10 again from {cifar10.URL})")
    assert not marker.exists()


def test_train_py_on_a_tampered_cifar10_prints_one_line_and_runs_nothing(tmp_path):
    data = tmp_path / "data"
    folder = write_cifar(data)
    marker = tmp_path / "ran"
    (folder / "data_batch_1").write_bytes(evil_batch("os.system", marker))
    res = run_train_in(tmp_path / "logs", ["--dataset", "cifar10", "--data_dir", str(data), "--epochs", "1",
                                           "--batch_size", "4"])
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1, res.err
    assert lines[0].startswith(f"error: the CIFAR-10 reader refuses to load {folder / 'data_batch_1'}: it asks "
                               f"for os.system")
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("_codecs", "decode"), ("numpy", "load"), ("numpy.testing", "assert_"),
                                         ("posix", "system"), ("copyreg", "_reconstructor")])
def test_only_numpy_array_reconstruction_is_admitted(tmp_path, module, name):
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02" + _global(module, name) + b".")
    with pytest.raises(DataError, match=f"asks for {module}.{name}, which a CIFAR-10 file never holds"):
        cifar10.read_batch(path)


def test_codecs_encode_only_for_latin1(tmp_path):
    """Protocol 2 writes bytes as _codecs.encode(str, 'latin1'); other codecs have no business in the file."""
    path = tmp_path / "batches.meta"
    rot13 = _global("_codecs", "encode") + b"(" + pickle.dumps("nvecynar", 2)[2:-1] + pickle.dumps("rot13", 2)[2:-1]
    path.write_bytes(b"\x80\x02}(" + pickle.dumps("label_names", 2)[2:-1] + b"]" + rot13 + b"tRau.")
    with pytest.raises(DataError, match="asks for _codecs.encode with encoding 'rot13'"):
        cifar10.read_class_names(path)


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_repickles_in_every_protocol_still_load(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    data = rng.integers(0, 256, size=(5, 3072), dtype=np.uint8)
    labels = [np.int64(i) for i in (3, 1, 4, 1, 5)]  # numpy scalars: another reconstruction path
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels, "filenames": [b"a.png", "b.png"]},
                                  protocol=protocol))
    images, got = cifar10.read_batch(path)
    assert got.tolist() == [3, 1, 4, 1, 5]
    assert np.array_equal(images, data.reshape(5, 3, 32, 32).transpose(0, 2, 3, 1))
    arr = pickle.dumps({"labels": np.arange(4, dtype=np.int16), "data": data[:4]}, protocol=protocol)
    path.write_bytes(arr)
    assert cifar10.read_batch(path)[1].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("labels", ["list", "array"])
def test_empty_batches_are_valid_in_every_protocol(tmp_path, protocol, labels):
    """Protocols 0-2 write an empty bytes object (an empty array's buffer, an empty name) as a call of bytes()."""
    path = tmp_path / "data_batch_1"
    empty = [] if labels == "list" else np.zeros(0, np.int64)
    path.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": empty, b"batch_label": b"",
                                   "filenames": [b""]}, protocol=protocol))
    images, got = cifar10.read_batch(path)
    assert images.shape == (0, 32, 32, 3) and images.dtype == np.uint8 and got.shape == (0,)


def test_bytes_is_admitted_only_without_arguments(tmp_path):
    path = tmp_path / "test_batch"
    huge = pickle.dumps((10 ** 12,), 2)[2:-1]  # bytes(10**12): a terabyte of zeros
    path.write_bytes(b"\x80\x02" + _global("__builtin__", "bytes") + huge + b"R.")
    with pytest.raises(DataError, match=r"asks for bytes\(1000000000000,\), which a CIFAR-10 file never holds"):
        cifar10.read_batch(path)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the real CIFAR-10 sample files are not on this machine")
def test_the_real_cifar10_files_load(tmp_path):
    images, labels = cifar10.read_batch(SAMPLE / "data_batch_1")
    with open(SAMPLE / "data_batch_1", "rb") as f:  # an independent read of the trusted original
        raw = pickle.load(f, encoding="bytes")
    assert np.array_equal(labels, raw[b"labels"]) and images.shape == (len(labels), 32, 32, 3)
    assert cifar10.read_class_names(SAMPLE / "batches.meta")[:2] == ["airplane", "automobile"]


# ------------------------------------------------------------------------------------ ModelNet40 and archives


@pytest.mark.parametrize("how", ["strings", "external_link", "group"])
def test_modelnet_h5_must_hold_plain_numbers(tmp_path, how):
    folder = write_modelnet(tmp_path)
    path = folder / "ply_data_train0.h5"
    with h5py.File(path, "a") as f:
        del f["data"]
        if how == "strings":
            f["data"] = np.array([b"rm -rf /", b"x"], dtype=h5py.string_dtype())
        elif how == "external_link":
            f["data"] = h5py.ExternalLink(str(folder / "ply_data_test0.h5"), "data")
        else:
            f.create_group("data")
    with pytest.raises(DataError, match=rf"{path}: 'data' is not an array of numbers stored in the file"):
        modelnet40.read_h5(path)


def test_tar_archive_cannot_write_outside_the_data_folder(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    evil = tmp_path / "src" / "modelnet40_ply_hdf5_2048.tar.gz"
    evil.parent.mkdir()
    with tarfile.open(evil, "w:gz") as tar:
        payload = b"echo owned\n"
        info = tarfile.TarInfo("../../escaped.sh")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    def fake_download(url, root, filename=None, md5=None, **kw):  # the "mirror": a local file, no network
        shutil.copy(evil, Path(root) / (filename or Path(url).name))

    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    root = tmp_path / "a" / "b" / "data"
    root.mkdir(parents=True)
    with pytest.raises(DataError, match="could not download ModelNet40 from https://mirror.example/"):
        fetch_archive("https://mirror.example/modelnet40_ply_hdf5_2048.tar.gz", root=root, md5=None,
                      what="ModelNet40", manual_fix="fetch it by hand")
    assert not (tmp_path / "a" / "escaped.sh").exists() and not list(tmp_path.rglob("escaped.sh"))
    assert tarfile.TarFile.extraction_filter is None  # the filter applied to this extraction only


# ------------------------------------------------------------------------------------------ the source check

#: files whose loads are checked: the package and the scripts (tests may use pickle on files they wrote)
SOURCES = sorted([*REPO.glob("*.py"), *(REPO / "perceiver").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")])
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Every call in ``source`` that could run code stored in a file, as 'file:line: what'."""
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ClassDef):
            bases = {_dotted(b) for b in node.bases}
            if bases & {"pickle.Unpickler", "_pickle.Unpickler"}:
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if "find_class" not in methods:
                    found.append(f"{where}: Unpickler subclass {node.name} without a restricting find_class")
        if isinstance(node, ast.ImportFrom) and node.module in PICKLING_MODULES:
            found += [f"{where}: from {node.module} import {a.name}" for a in node.names
                      if a.name in ("load", "loads", "open", "Unpickler")]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        kw = {k.arg: k.value for k in node.keywords}
        if head in PICKLING_MODULES and last in ("load", "loads", "open", "Unpickler"):
            found.append(f"{where}: {name}")
        elif name == "torch.load":
            value = kw.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        elif name in ("torch.jit.load", "torch.package.PackageImporter", "yaml.load", "yaml.unsafe_load",
                      "pd.read_pickle", "pandas.read_pickle", "np.lib.format.read_array"):
            found.append(f"{where}: {name}")
        if "allow_pickle" in kw and not (isinstance(kw["allow_pickle"], ast.Constant)
                                         and kw["allow_pickle"].value is False):
            found.append(f"{where}: {name} with allow_pickle other than False")
        if None in kw and name in ("torch.load", "np.load", "numpy.load"):
            found.append(f"{where}: {name}(**kwargs) cannot be checked")
        if name == "h5py.File":
            mode = node.args[1] if len(node.args) > 1 else kw.get("mode")
            if not (isinstance(mode, ast.Constant) and mode.value == "r") and "data" in filename:
                found.append(f"{where}: h5py.File of a dataset not opened read-only ('r')")
    return found


def test_the_checker_catches_unsafe_loads():
    bad = '''
import pickle, torch, numpy as np, yaml
pickle.load(open("x", "rb"))
pickle.loads(b"")
torch.load("x")
torch.load("x", weights_only=False)
np.load("x", allow_pickle=True)
yaml.load("x")
class U(pickle.Unpickler):
    pass
from marshal import loads
'''
    assert len(unsafe_loads(bad)) == 8
    good = '''
import pickle, torch, numpy as np
torch.load("x", map_location="cpu", weights_only=True)
np.load("x", allow_pickle=False)
np.load("x")
class U(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(name)
'''
    assert unsafe_loads(good) == []


def test_no_unsafe_load_in_the_package_or_scripts():
    assert len(SOURCES) > 20 and any(p.name == "cifar10.py" for p in SOURCES)
    found = [hit for path in SOURCES for hit in unsafe_loads(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []
