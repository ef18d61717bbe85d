"""Verified downloads of data set files (pooch), leaving nothing behind when they fail."""

from __future__ import annotations

from pathlib import Path


def download(url: str, md5: str | None, folder: Path, name: str, timeout: float) -> Path:
    """Download ``url`` into ``folder``/``name`` and check its md5 (None: no check); return the
    file. When it fails, the folder is removed again if this call created it and it is still
    empty (an offline machine keeps no empty ``data/<name>/``), then the error propagates."""
    import pooch

    created = not folder.exists()
    try:
        return Path(
            pooch.retrieve(
                url=url,
                known_hash=f"md5:{md5}" if md5 else None,
                fname=name,
                path=folder,
                downloader=pooch.HTTPDownloader(timeout=timeout, progressbar=False),
            )
        )
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
