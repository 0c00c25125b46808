"""engine/projdata.py: the engine finds PROJ data where a venv's system pyproj does not look."""

from __future__ import annotations

import os
import subprocess
import sys

from deepfield.engine.projdata import first_proj_data, proj_data_candidates

from ..conftest import PLUGINPATH


def test_the_base_interpreter_data_comes_first_then_gdal_paths(tmp_path):
    candidates = proj_data_candidates(str(tmp_path / "base"), [str(tmp_path / "gdal")])
    assert candidates[:2] == [tmp_path / "base" / "share" / "proj", tmp_path / "gdal"]


def test_the_first_folder_holding_proj_db_is_kept(tmp_path):
    empty, holding, later = tmp_path / "empty", tmp_path / "holding", tmp_path / "later"
    for folder in (empty, holding, later):
        folder.mkdir()
    (holding / "proj.db").write_bytes(b"")
    (later / "proj.db").write_bytes(b"")
    assert first_proj_data([tmp_path / "missing", empty, holding, later]) == holding
    assert first_proj_data([empty]) is None


def test_without_proj_data_set_the_engine_still_builds_crs():
    """A fresh engine process with neither PROJ_DATA nor PROJ_LIB set reads EPSG:3358 (the NC data's CRS)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    env["PYTHONPATH"] = str(PLUGINPATH)
    code = ("from deepfield.engine.crs import pyproj_crs; from osgeo import osr; s = osr.SpatialReference(); "
            "s.ImportFromEPSG(3358); print(pyproj_crs(s.ExportToWkt()).to_epsg())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3358"
