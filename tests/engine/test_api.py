"""The engine's public API, and what importing the contract costs QGIS."""

import json
import subprocess
import sys

from ..conftest import PLUGINPATH

PUBLIC = {"Grid", "Window", "ModelGeometry", "derive_geometry", "load_model_folder", "save_model_folder",
          "ModelMetadata", "serve_model", "open_dataset", "raster_info",
          "EngineError", "InvalidSpec", "JobCancelled", "MissingCRS", "NoOverlap", "NotAModelFolder"}


def run_python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=PLUGINPATH, capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_star_import_gives_the_public_api():
    names = run_python("import json; from deepfield.engine import *; import deepfield.engine as e; "
                       "print(json.dumps({'all': sorted(e.__all__), 'bound': sorted(n for n in e.__all__ "
                       "if n in globals() and globals()[n] is getattr(e, n))}))")
    assert set(names["all"]) == PUBLIC
    assert set(names["bound"]) == PUBLIC  # every name resolved, to the engine's own object


def test_public_names_are_the_library_functions():
    import deepfield.engine as engine
    from deepfield.engine.modelfolder import load_model_folder
    from deepfield.engine.serving import serve_model

    assert engine.serve_model is serve_model and engine.load_model_folder is load_model_folder


def test_the_contract_and_outputs_load_no_numpy_gdal_or_tensorflow():
    """QGIS imports these (algorithms/): they must stay standard library only."""
    loaded = run_python("import json, sys; import deepfield.engine.contract, deepfield.engine.outputs; "
                        "print(json.dumps(sorted(m for m in ('numpy', 'osgeo', 'tensorflow', 'keras', 'pyproj') "
                        "if m in sys.modules)))")
    assert loaded == []
    control = run_python("import json, sys; import deepfield.engine.geometry; "
                         "print(json.dumps(sorted(m for m in ('numpy',) if m in sys.modules)))")
    assert control == ["numpy"]  # the probe does see a heavy import
