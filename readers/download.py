"""Downloads: a file fetched with a progress bar, its md5 checked, written atomically."""
from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from base.files import atomic_write_bytes

from .common import DatasetError


def md5_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def download_file(url: str, destination: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` with a progress bar; verify the md5; write atomically.

    Nothing is left at ``destination`` unless the whole file arrived with the right checksum.
    """
    from tqdm import tqdm

    destination = Path(destination)

    def write(out):
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {destination.name}",
                      disable=None) as progress:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DatasetError(f"{url} arrived with md5 {digest.hexdigest()}, expected {md5}: the download is corrupt "
                               f"or truncated; nothing was kept. Try again, or download it by hand into "
                               f"{destination.parent}")

    try:
        atomic_write_bytes(destination, write)
        return destination
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DatasetError(f"could not download {url} ({error}). Without a network, download it by hand and put "
                           f"{destination.name} in {destination.parent}") from error

