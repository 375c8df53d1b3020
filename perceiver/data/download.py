"""Fetching a dataset archive, with every failure turned into one `DataError` line.

The actual transfer is torchvision's `download_and_extract_archive`, looked up at call time through this module so
tests can monkeypatch `perceiver.data.download.download_and_extract_archive` and never touch the network.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from ..errors import DataError


def fetch_archive(url: str, *, root: Path, md5: str | None, what: str, manual_fix: str) -> None:
    """Download `url` into `root` and extract it there; on failure raise DataError naming `manual_fix`."""
    print(f"downloading {what} from {url} into {root} ...", flush=True)
    try:
        download_and_extract_archive(url, download_root=str(root), md5=md5, remove_finished=True)
    except Exception as exc:  # noqa: BLE001 - network, HTTP, checksum and archive errors all mean "fetch it by hand"
        reason = " ".join(str(exc).split()) or type(exc).__name__  # messages can span lines; keep one
        raise DataError(f"could not download {what} from {url} ({reason}); {manual_fix}") from None
