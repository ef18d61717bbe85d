"""Fill the project's data/ folder with an IDX data set, for DVC to version (``data.dvc``):

    python -m optstudy.data.fetch data=fashion_mnist

finds the data set as ``train.py`` does (data.root, data/<name>/, the system folder, else a
verified download), then writes its four IDX files uncompressed into ``<paths.data_dir>/<name>/``:
the same bytes whichever copy they came from, so ``dvc status`` tells whether they are the
version the project's ``data.dvc`` records.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

from hydra.utils import instantiate

from optstudy import cli
from optstudy.atomic import atomic_write
from optstudy.data.idx import read_idx
from optstudy.data.mnist import FILES, IdxSource
from optstudy.errors import ConfigError


def _decompress(path: Path, out: Path) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)


def fetch_idx(source: IdxSource, target: Path) -> list[Path]:
    """Write the source's IDX files, decompressed and parsed once as a check, into ``target``."""
    written = []
    for stem, path in zip(FILES.values(), source.files(), strict=True):
        out = target / stem
        if path.resolve() != out.resolve():
            atomic_write(out, lambda tmp, path=path: _decompress(path, tmp))
        read_idx(out)
        written.append(out)
    return written


def fetch(overrides: list[str]) -> list[Path]:
    """Compose the config like train.py and fetch its data set into the data folder."""
    cfg, _ = cli.compose(overrides)
    source = instantiate(cfg.data.source)
    if not isinstance(source, IdxSource):
        raise ConfigError(
            f"nothing to fetch for {cfg.data.source.name}: fetch copies the IDX data sets "
            f"(fashion_mnist, mnist); others go into {cfg.paths.data_dir}/<name>/ by hand or by "
            "train.py's verified download (README: Data and DVC)"
        )
    return fetch_idx(source, Path(cfg.paths.data_dir) / source.name)


def main(argv: list[str] | None = None) -> int:
    """Fetch the data set of a composed config (the train.py overrides on the command line)."""

    def action() -> None:
        for path in fetch(sys.argv[1:] if argv is None else argv):
            print(path)

    return cli.command(action)


if __name__ == "__main__":
    sys.exit(main())
