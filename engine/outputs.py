"""Atomic outputs: write under a temporary name, move into place only on success.

A failed or cancelled job leaves neither a half-written file nor a stale one:
``<path>.part`` (a file or a folder) is removed on error, and the QGIS side
removes it too after killing a worker (see ``part_path``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

PART_SUFFIX = ".part"


def part_path(path: str | os.PathLike) -> Path:
    """The temporary name an output is written under: ``<path>.part``."""
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file or folder if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write; on success replace ``path`` with it.

    With ``folder=True`` the temporary path is created as an empty folder.
    GDAL side files written next to the temporary file (``.aux.xml``, ``.qml``)
    are renamed along with it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = part_path(final)
    remove_path(temp)
    if folder:
        temp.mkdir()
    try:
        yield temp
    except BaseException:
        remove_path(temp)
        for side in _side_files(temp):
            remove_path(side)
        raise
    remove_path(final)
    os.replace(temp, final)
    for side in _side_files(temp):
        os.replace(side, final.with_name(final.name + side.name[len(temp.name):]))


def _side_files(temp: Path) -> list[Path]:
    return [p for p in temp.parent.glob(temp.name + ".*") if p != temp]
