"""Atomic outputs: write under a temporary name, move into place only on success.

A failed or cancelled job leaves neither a half-written file nor a stale one:
``<path>.part`` (a file or a folder) is removed on error, and the QGIS side
removes it too after killing a worker (:func:`remove_leftovers`), and a worker that must exit
without unwinding its job (its parent died) removes what it was still writing
(:func:`remove_unfinished`). Standard library only, so QGIS imports it.

Outputs never replace what the user did not ask to replace: a folder output is written
only where nothing is, into an empty folder, or over a folder DeepField wrote itself
(it holds the :data:`MARKER` file); a file output never replaces a folder; and no output
may be, or lie inside, or contain, one of the job's inputs (:func:`check_not_an_input`).
Call :func:`check_output_folder` / :func:`check_not_an_input` before heavy work starts;
:func:`atomic_output` checks again when it starts writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from .contract import PART_SUFFIX
from .errors import EngineError

#: The file DeepField puts into every folder it writes: such a folder may be replaced.
MARKER = ".deepfield"
#: Folders written before the marker existed: (file, its "format") of a model folder and a dataset.
UNMARKED_FORMATS = (("deepfield.json", "deepfield-model"), ("manifest.json", "deepfield-dataset"))
#: The temporary paths of the outputs this process is writing now (:func:`atomic_output`).
_UNFINISHED: set[Path] = set()


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
    if folder:
        check_output_folder(final)
    else:
        check_output_file(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = part_path(final)
    remove_path(temp)
    if folder:
        temp.mkdir()
    _UNFINISHED.add(temp)
    try:
        yield temp
        if folder:
            (temp / MARKER).write_text("written by DeepField: this folder is replaced when its job runs again\n",
                                       encoding="utf-8")
    except BaseException:
        _remove_temporary(temp)
        raise
    finally:  # before the rename: an output being moved into place is never removed
        _UNFINISHED.discard(temp)
    if folder:
        _replace_folder(temp, final)
    else:
        for side in stale_side_files(final):
            remove_path(side)
        os.replace(temp, final)
    for side in _side_files(temp):
        os.replace(side, final.with_name(final.name + side.name[len(temp.name):]))


def remove_unfinished() -> None:
    """Remove every output this process is still writing (``<path>.part`` and its side files),
    for an exit that cannot unwind the job writing them: an orphaned worker's grace exit. Written
    outputs are untouched (theirs are already renamed)."""
    for temp in list(_UNFINISHED):
        try:
            _remove_temporary(temp)
        except OSError:  # best effort: the caller exits next
            pass


def _remove_temporary(temp: Path) -> None:
    remove_path(temp)
    for side in _side_files(temp):
        remove_path(side)


#: What GDAL keeps next to a raster ``<name>``: statistics/metadata, external overviews, masks.
GDAL_SIDE_SUFFIXES = (".aux.xml", ".ovr", ".msk")


def stale_side_files(path: Path) -> list[Path]:
    """Files describing the raster ``path`` that a new raster there must not inherit:
    ``<name>.aux.xml``, ``<name>.ovr``, ``<name>.msk`` (GDAL) and ``<stem>.qml`` (the QGIS style)."""
    return [path.with_name(path.name + suffix) for suffix in GDAL_SIDE_SUFFIXES] + [path.with_suffix(".qml")]


def _side_files(temp: Path) -> list[Path]:
    """``<temp>.*``: side files GDAL wrote next to the temporary file."""
    return [p for p in temp.parent.iterdir() if p.name.startswith(temp.name + ".")]


def check_outputs(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None],
                  folder: bool = False) -> None:
    """The checks a job runs before heavy work: each output (``None`` skipped) may be written
    (:func:`check_output_folder` when ``folder``, else :func:`check_output_file`) and is none of
    the ``inputs`` (:func:`check_not_an_input`)."""
    outputs = [o for o in outputs if o]
    for output in outputs:
        (check_output_folder if folder else check_output_file)(output)
    check_not_an_input(outputs, [i for i in inputs if i])


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> None:
    """:class:`EngineError` unless ``path`` may receive a folder output: nothing there, an
    empty folder, or a folder DeepField wrote (it holds :data:`MARKER`). Also refused: a
    parent folder that cannot be created or written."""
    path = Path(path)
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise EngineError(f"the {what} {path} is an existing file, not a folder: choose a new folder name "
                          "(DeepField never replaces a file with a folder)")
    if path.is_dir() and any(path.iterdir()) and not written_by_deepfield(path):
        raise EngineError(f"the {what} {path} already holds files that DeepField did not write: choose a new "
                          "or empty folder (DeepField replaces only folders it wrote itself)")
    _check_writable_parent(path, what)


def written_by_deepfield(folder: Path) -> bool:
    """``folder`` holds :data:`MARKER`, or is a model folder or dataset from before the marker."""
    if (folder / MARKER).is_file():
        return True
    for name, format_name in UNMARKED_FORMATS:
        try:
            if json.loads((folder / name).read_text(encoding="utf-8")).get("format") == format_name:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def check_output_file(path: str | os.PathLike, what: str = "output") -> None:
    """:class:`EngineError` when the file output ``path`` is an existing folder, or its folder
    cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise EngineError(f"the {what} {path} is an existing folder: name a file (DeepField never replaces a "
                          "folder with a file)")
    _check_writable_parent(path, what)


def check_not_an_input(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """:class:`EngineError` when an output is one of the inputs, lies inside an input folder,
    or (a folder output) contains an input: writing it would overwrite or delete that input.
    Paths that are not plain files (GDAL connection strings, VRT XML) are skipped."""
    resolved = [(str(i), Path(i).resolve()) for i in inputs if i and is_plain_path(str(i))]
    for output in outputs:
        if not output:
            continue
        out = Path(output).resolve()
        for name, inp in resolved:
            if out == inp or inp in out.parents or out in inp.parents:
                raise EngineError(f"the output {output} would overwrite the input {name}: choose an output "
                                  "outside the inputs (DeepField never writes over or into an input)")


#: A GDAL connection string rather than a file name: ``GPKG:f.gpkg:table``, ``NETCDF:"f.nc":var``,
#: ``HDF5:...`` (a driver prefix of two or more characters, so ``C:\`` stays a path).
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")


def is_plain_path(path: str) -> bool:
    """True for a file name; False for VRT XML, ``/vsi...`` paths and driver-prefixed sources."""
    path = path.lstrip()
    return not (path.startswith(("<", "/vsi")) or _DRIVER_PREFIX.match(path))


def _check_writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise EngineError(f"the {what} {path}: {parent} is a file, not a folder: choose another location")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EngineError(f"the {what} {path} cannot be written: no write permission in {parent}; choose a "
                          "folder you can write to")


def _replace_folder(temp: Path, final: Path) -> None:
    """Move ``temp`` to ``final``; a previous (marked) ``final`` is moved aside first and removed
    only once the new folder is in place."""
    if not final.exists():
        os.replace(temp, final)
        return
    aside = final.with_name(final.name + ".old" + PART_SUFFIX)
    remove_path(aside)
    os.replace(final, aside)
    try:
        os.replace(temp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    remove_path(aside)
