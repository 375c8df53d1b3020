"""The data flags: their defaults, and the one-line errors of the combinations that make no sense."""
from __future__ import annotations

import argparse

import pytest

from perceiver.data import DATASET_DEFAULTS, DATASETS, DataSettings, add_data_args


def parse(argv):
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(argv)
    try:
        DataSettings.from_flags(vars(args)).check()
    except ValueError as e:
        parser.error(str(e))
    return args


def test_flag_defaults_and_dataset_defaults():
    args = parse([])
    assert (args.dataset, args.data_dir, args.modelnet40_num_points, args.permute_pixels_seed) == \
        ("cifar10", "./data", 2048, 42)
    assert not (args.permute_pixels or args.no_augment or args.modelnet40_rotate) and args.modelnet40_jitter == 0
    assert set(DATASET_DEFAULTS) == set(DATASETS)
    assert DATASET_DEFAULTS["cifar10"] == {"batch_size": 64, "fourier_bands": 16, "max_freq": 32.0}
    assert DATASET_DEFAULTS["modelnet40"] == {"batch_size": 8, "fourier_bands": 64, "max_freq": 1120.0}


@pytest.mark.parametrize("argv", [
    ["--dataset", "modelnet40", "--permute_pixels"],
    ["--dataset", "shapes3d", "--permute_pixels"],
    ["--dataset", "modelnet40", "--modelnet40_num_points", "0"],
    ["--dataset", "modelnet40", "--modelnet40_num_points", "4096"],
    ["--dataset", "modelnet40", "--modelnet40_jitter", "-0.1"],
    ["--dataset", "cifar10", "--modelnet40_rotate"],
    ["--dataset", "modelnet40", "--modelnet40_rotate", "--no_augment"],
    ["--dataset", "shapes2d", "--shapes_train_size", "5"],
    ["--dataset", "shapes2d", "--auto_augment", "trivial"],
    ["--dataset", "cifar10", "--auto_augment", "trivial", "--no_augment"],
    ["--dataset", "cifar10", "--auto_augment", "bogus"],
    ["--dataset", "cifar10", "--auto_augment", "trivial", "--randaugment_magnitude", "5"],
    ["--dataset", "cifar10", "--randaugment_ops", "1"],
    ["--dataset", "cifar10", "--auto_augment", "randaugment", "--randaugment_magnitude", "31"],
    ["--dataset", "cifar10", "--auto_augment", "randaugment", "--randaugment_ops", "0"],
])
def test_validate_rejects(argv, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert "error:" in capsys.readouterr().err


def test_validate_accepts():
    parse(["--dataset", "shapes2d", "--permute_pixels", "--permute_pixels_seed", "3"])
    parse(["--dataset", "modelnet40", "--modelnet40_num_points", "1024", "--modelnet40_rotate",
           "--modelnet40_jitter", "0.01"])
    args = parse(["--auto_augment", "randaugment", "--randaugment_ops", "1", "--randaugment_magnitude", "5"])
    assert (args.auto_augment, args.randaugment_ops, args.randaugment_magnitude) == ("randaugment", 1, 5)
