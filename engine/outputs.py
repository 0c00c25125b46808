"""Atomic outputs: write under a temporary name, move into place only on success.

A failed or cancelled job leaves neither a half-written file nor a stale one:
``<path>.part`` (a file or a folder) is removed on error, and the QGIS side
removes it too after killing a worker (:func:`remove_leftovers`). Standard library only, so
QGIS imports it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from .contract import PART_SUFFIX


def part_path(path: str | os.PathLike) -> Path:
    """The temporary name an output is written under: ``<path>.part``."""
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


def remove_leftovers(path: str | os.PathLike) -> None:
    """Remove what a stopped job left of the output ``path``: ``<name>.part`` (file or folder), its
    side files ``<name>.part.*`` (``.aux.xml``) and the class-map style ``<stem>.qml.part``."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    parts = (part_path(path).name, part_path(path.with_suffix(".qml")).name)
    for found in path.parent.iterdir():
        if found.name in parts or found.name.startswith(tuple(part + "." for part in parts)):
            remove_path(found)


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
    GDAL side files written next to the temporary file (``<path>.part.aux.xml``)
    are renamed along with it; the side files of the output it replaces are removed
    (see :func:`stale_side_files`), so none of them outlives its raster.
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
    if not folder:
        for side in stale_side_files(final):
            remove_path(side)
    os.replace(temp, final)
    for side in _side_files(temp):
        os.replace(side, final.with_name(final.name + side.name[len(temp.name):]))


#: What GDAL keeps next to a raster ``<name>``: statistics/metadata, external overviews, masks.
GDAL_SIDE_SUFFIXES = (".aux.xml", ".ovr", ".msk")


def stale_side_files(path: Path) -> list[Path]:
    """Files describing the raster ``path`` that a new raster there must not inherit:
    ``<name>.aux.xml``, ``<name>.ovr``, ``<name>.msk`` (GDAL) and ``<stem>.qml`` (the QGIS style)."""
    return [path.with_name(path.name + suffix) for suffix in GDAL_SIDE_SUFFIXES] + [path.with_suffix(".qml")]


def _side_files(temp: Path) -> list[Path]:
    """``<temp>.*``: side files GDAL wrote next to the temporary file."""
    return [p for p in temp.parent.iterdir() if p.name.startswith(temp.name + ".")]
