"""Fetching a dataset archive, with every failure turned into one `DataError` line.

The actual transfer is torchvision's `download_and_extract_archive`, looked up at call time through this module so
tests can monkeypatch `perceiver.data.download.download_and_extract_archive` and never touch the network.
torchvision extracts tar archives with tarfile's unfiltered default, under which a member named ``../x``, an
absolute path or a link can write outside the data folder (ModelNet40 comes from mirrors, without a checksum), so
the extraction runs under tarfile's ``data`` filter, which refuses such members. (zipfile already strips them.)
"""

from __future__ import annotations

import contextlib
import tarfile
from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from ..errors import DataError


@contextlib.contextmanager
def _tar_data_filter():
    """Make every tar extraction in the block use ``tarfile.data_filter`` (Python >= 3.11.4, 3.10.12, 3.9.17)."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:  # an older Python: it has no filters to offer
        yield
        return
    previous = tarfile.TarFile.__dict__.get("extraction_filter")  # raw: it may be a staticmethod
    tarfile.TarFile.extraction_filter = staticmethod(data_filter)
    try:
        yield
    finally:
        tarfile.TarFile.extraction_filter = previous


def fetch_archive(url: str, *, root: Path, md5: str | None, what: str, manual_fix: str) -> None:
    """Download `url` into `root` and extract it there; on failure raise DataError naming `manual_fix`."""
    print(f"downloading {what} from {url} into {root} ...", flush=True)
    try:
        with _tar_data_filter():
            download_and_extract_archive(url, download_root=str(root), md5=md5, remove_finished=True)
    except Exception as exc:  # noqa: BLE001 - network, HTTP, checksum and archive errors all mean "fetch it by hand"
        reason = " ".join(str(exc).split()) or type(exc).__name__  # messages can span lines; keep one
        raise DataError(f"could not download {what} from {url} ({reason}); {manual_fix}") from None
