"""PROJ data (``proj.db``) for the engine's pyproj, when pyproj finds none by itself.

A pyproj wheel carries its own PROJ data; the system pyproj seen through a
``--system-site-packages`` venv (Debian 13) looks under the venv's prefix, finds nothing, and every
CRS fails. The engine then points ``PROJ_DATA`` at the data of the interpreter the venv was made
from (``<sys.base_prefix>/share/proj``) or at a folder GDAL searches.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

PROJ_DB = "proj.db"
ENV_VARIABLES = ("PROJ_DATA", "PROJ_LIB")  # PROJ >= 9.1 reads PROJ_DATA, older PROJ_LIB


def proj_data_candidates(base_prefix: str, gdal_search_paths: list[str]) -> list[Path]:
    """Folders that may hold the system's ``proj.db``, most likely first."""
    return [Path(base_prefix) / "share" / "proj", *map(Path, gdal_search_paths), Path("/usr/share/proj")]


def first_proj_data(candidates: list[Path]) -> Path | None:
    """The first folder holding a ``proj.db``, else None."""
    return next((folder for folder in candidates if (folder / PROJ_DB).is_file()), None)


@functools.cache
def ensure_proj_data() -> Path | None:
    """Set ``PROJ_DATA`` (for pyproj, GDAL and child processes) when pyproj finds no PROJ data.

    Called before pyproj builds a CRS (:func:`.crs.pyproj_crs`); runs once per process. Does
    nothing when ``PROJ_DATA``/``PROJ_LIB`` is set, pyproj is missing (Check environment reports
    it) or pyproj finds its data; returns the folder it set, else None.
    """
    if any(os.environ.get(name) for name in ENV_VARIABLES):
        return None
    try:
        from pyproj.datadir import get_data_dir, set_data_dir
        from pyproj.exceptions import DataDirError
    except ImportError:
        return None
    try:
        get_data_dir()
        return None
    except DataDirError:
        pass
    try:
        from osgeo import osr

        gdal_paths = list(osr.GetPROJSearchPaths() or [])
    except (ImportError, AttributeError):
        gdal_paths = []
    folder = first_proj_data(proj_data_candidates(sys.base_prefix, gdal_paths))
    if folder is not None:
        os.environ["PROJ_DATA"] = str(folder)
        set_data_dir(str(folder))
    return folder
