"""The probe suite: bad inputs, as a user gives them, each a clear error and nothing touched.

For every case (a table below): Processing fails with a message that names the input (a
parameter name or the file) and says what is wrong, without a traceback; no output, nor its
``.part``, is left; and every input file is byte-identical afterwards. Most cases run through
Processing in this process (fast); a sample runs through ``qgis_process --json``, where the
message must also be printed once. The expensive inputs (a dataset, a model folder) are built
once per module, in the engine interpreter.

TensorFlow never loads in this process: jobs run in the engine interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from osgeo import gdal, ogr, osr
from qgis_headless import parameter_args  # scripts/, put on sys.path by conftest.py

from ..conftest import PLUGINPATH, folder_digest
from .conftest import ENGINE_PYTHON

gdal.UseExceptions()
NC = "nc_landsat7_landcover"
PATCH = 16

BUILD = """
import sys
from deepfield.engine.modelfolder import ModelMetadata, save_model_folder
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.protocol import Reporter
from deepfield.models import ZOO
image, strata, points, dataset, model = sys.argv[1:]
extract_patches_job({"sources": [{"path": image, "patch_size": 16, "name": "landsat"}], "positions": points,
                     "label": {"kind": "segmentation", "path": strata}, "shard_size": 8, "output": dataset},
                    Reporter(open("/dev/null", "w")))
network = ZOO["unet"]({"task": "segmentation", "sources": [{"name": "landsat", "bands": 6}], "classes": 7,
                       "depth": 1, "width": 4})
sources = [{"name": "landsat", "scale": "1", "spacing": [28.5, 28.5]}]
save_model_folder(model, network, ModelMetadata.for_model(network, "segmentation", sources=sources))
"""


def crop(source: Path, target: Path, window: tuple[int, int, int, int], output_type=gdal.GDT_Float32) -> str:
    gdal.Translate(str(target), str(source), srcWin=list(window), outputType=output_type)
    return str(target)


def write_points(path: Path, points: list[tuple[float, float, int] | None], srs_wkt: str) -> str:
    """A GeoPackage layer ``points`` with an integer ``class``; ``None`` is a feature without geometry."""
    srs = osr.SpatialReference(wkt=srs_wkt)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("points", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("split", ogr.OFTString))
    for k, point in enumerate(points):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class", 1 if point is None else point[2])
        feature.SetField("split", ("train", "valid", "test")[k % 3])
        if point is not None:
            feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({point[0]} {point[1]})"))
        layer.CreateFeature(feature)
    source = None
    return str(path)


@pytest.fixture(scope="module")
def world(data_dir, tmp_path_factory) -> dict[str, str]:
    """Good and bad inputs, by name (paths as text); built once."""
    folder = tmp_path_factory.mktemp("world")
    nc = data_dir / NC
    w = {"world": str(folder)}
    w["image"] = crop(nc / "lsat7_2000_6band.vrt", folder / "image.tif", (300, 300, 64, 64))
    w["strata"] = crop(nc / "strata.tif", folder / "strata.tif", (300, 300, 64, 64), gdal.GDT_Byte)
    image = gdal.Open(w["image"])
    gt, wkt = image.GetGeoTransform(), image.GetProjection()
    image = None
    centre = [(gt[0] + (c + 0.5) * gt[1], gt[3] + (r + 0.5) * gt[5], 1 + (c + r) % 7)
              for c in range(12, 52, 8) for r in range(12, 52, 8)]
    w["points"] = write_points(folder / "points.gpkg", centre, wkt)
    w["empty_points"] = write_points(folder / "empty_points.gpkg", [], wkt)
    w["no_geometry"] = write_points(folder / "no_geometry.gpkg", [None] * 5, wkt)
    w["far_points"] = write_points(folder / "far_points.gpkg", [(0.0, 0.0, 1), (10.0, 10.0, 2)], wkt)
    no_crs = gdal.Translate(str(folder / "no_crs.tif"), w["image"])
    no_crs.SetProjection("")
    no_crs = None
    w["no_crs"] = str(folder / "no_crs.tif")
    bare = gdal.GetDriverByName("GTiff").Create(str(folder / "no_geotransform.tif"), 64, 64, 6, gdal.GDT_Float32)
    bare.SetProjection(wkt)
    bare = None
    w["no_geotransform"] = str(folder / "no_geotransform.tif")
    (folder / "empty.tif").write_bytes(b"")
    w["empty_file"] = str(folder / "empty.tif")
    (folder / "notes.tif").write_text("not a raster, a note\n")
    w["text_file"] = str(folder / "notes.tif")
    (folder / "a_folder.tif").mkdir()
    w["a_folder"] = str(folder / "a_folder.tif")
    w["missing"] = str(folder / "missing.tif")
    documents = folder / "Documents"
    documents.mkdir()
    (documents / "thesis.odt").write_text("years of work")
    w["user_folder"] = str(documents)
    (folder / "results.txt").write_text("a user's file")
    w["user_file"] = str(folder / "results.txt")
    w["dataset"], w["model"] = str(folder / "dataset"), str(folder / "model")
    env = {**os.environ, "PYTHONPATH": str(PLUGINPATH), "TF_CPP_MIN_LOG_LEVEL": "3"}
    built = subprocess.run([ENGINE_PYTHON, "-c", BUILD, w["image"], w["strata"], w["points"], w["dataset"],
                            w["model"]], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    shards = sorted((Path(w["dataset"]) / "train").glob("landsat-*.npy"))
    for name, damage in (("missing_shard", "unlink"), ("truncated_shard", "truncate"), ("bad_manifest", "json")):
        copy = folder / name
        shutil.copytree(w["dataset"], copy)
        shard = copy / shards[0].relative_to(w["dataset"])
        if damage == "unlink":
            shard.unlink()
        elif damage == "truncate":
            shard.write_bytes(shard.read_bytes()[:200])
        else:
            (copy / "manifest.json").write_text("{not json")
        w[name] = str(copy)
    w["shard"] = str(shards[0].relative_to(w["dataset"]))
    (folder / "not_a_model").mkdir()
    (folder / "not_a_model" / "readme.txt").write_text("hello")
    w["not_a_model"] = str(folder / "not_a_model")
    bad_json = folder / "bad_json_model"
    shutil.copytree(w["model"], bad_json)
    (bad_json / "deepfield.json").write_text("{")
    w["bad_json_model"] = str(bad_json)
    gdal.Translate(str(folder / "far.tif"), w["strata"], outputBounds=[0, 2000, 2000, 0])
    w["far_raster"] = str(folder / "far.tif")
    w["one_band"] = crop(nc / "lsat7_2000_10.tif", folder / "one_band.tif", (300, 300, 64, 64))
    named = gdal.Open(crop(nc / "strata.tif", folder / "named_strata.tif", (300, 300, 64, 64), gdal.GDT_Byte), 1)
    named.GetRasterBand(1).SetCategoryNames(["", "developed", "agriculture", "herbaceous", "shrubland", "forest",
                                             "water", "sediment"])
    w["named_strata"], named = named.GetDescription(), None
    w["parking"] = str(folder / "parking.gpkg")  # OSM-like polygons whose text is not a class of the map
    gdal.VectorTranslate(w["parking"], w["points"], SQLDialect="SQLITE", geometryType="POLYGON",
                         SQLStatement="SELECT ST_Buffer(geom, 40) AS geom, 'parking' AS fclass FROM points")
    return w


# -- the cases: (id, algorithm, parameters, what the message must say) ---------------------------
# Parameters and messages may name world entries as {name}; {out} is the case's own output folder.

SS, EP, TM, AM, EM, DM = ("deepfield:selectsamples", "deepfield:extractpatches", "deepfield:trainmodel",
                          "deepfield:applymodel", "deepfield:evaluatemap", "deepfield:describemodel")
GRID = {"INPUT": "{image}", "STRATEGY": 3, "PATCH_SIZE": PATCH, "OUTPUT": "{out}/positions.gpkg"}
POINTS = {"INPUT": "{image}", "STRATEGY": 0, "VECTOR": "{points}", "CLASS_FIELD": "class", "PATCH_SIZE": PATCH,
          "OUTPUT": "{out}/positions.gpkg"}
EXTRACT = {"SOURCES": "{image}", "PATCH_SIZES": str(PATCH), "POSITIONS": "{points}", "LABEL_KIND": 1,
           "LABEL_RASTER": "{strata}", "OUTPUT": "{out}/dataset"}
TRAIN = {"DATASET": "{dataset}", "ARCHITECTURE": 3, "EPOCHS": 1, "BATCH_SIZE": 4, "OUTPUT": "{out}/model"}
APPLY = {"MODEL": "{model}", "SOURCES": "{image}", "OUTPUT": "{out}/classes.tif"}
EVALUATE = {"INPUT": "{strata}", "REFERENCE_RASTER": "{strata}", "OUTPUT_FOLDER": "{out}/evaluation"}

#: Every raster parameter, with the parameters that make the rest of its run good.
RASTER_PARAMETERS = [
    (SS, GRID, "INPUT"), (SS, {**GRID, "STRATEGY": 2, "LABEL_RASTER": "{strata}"}, "LABEL_RASTER"),
    (SS, {**GRID, "MASK": "{strata}"}, "MASK"), (EP, EXTRACT, "SOURCES"), (EP, EXTRACT, "LABEL_RASTER"),
    (AM, APPLY, "SOURCES"), (EM, EVALUATE, "INPUT"), (EM, EVALUATE, "REFERENCE_RASTER"),
]
#: What is wrong with a raster file, and what the message says about it.
RASTER_FAULTS = [("missing", "{missing} does not exist"), ("empty_file", "{empty_file} is an empty file"),
                 ("text_file", "{text_file} is not a raster GDAL can read"),
                 ("a_folder", "{a_folder} is a folder, not a raster file")]

CASES = [
    (f"{name}-{algorithm.split(':')[1]}-{parameter}", algorithm, {**base, parameter: "{" + name + "}"},
     f"({parameter}): {message}")
    for algorithm, base, parameter in RASTER_PARAMETERS for name, message in RASTER_FAULTS
] + [
    # rasters GDAL reads but that cannot be placed on the ground
    *[(f"{name}-{algorithm.split(':')[1]}-{key}", algorithm, {**base, key: "{" + name + "}"}, message)
      for name, message in (("no_crs", "{no_crs} has no coordinate reference system"),
                            ("no_geotransform", "{no_geotransform} is not georeferenced"))
      for algorithm, base, key in ((SS, GRID, "INPUT"), (EP, EXTRACT, "SOURCES"), (EM, EVALUATE, "INPUT"),
                                   (EM, EVALUATE, "REFERENCE_RASTER"), (AM, APPLY, "SOURCES"))],
    # point layers with nothing to use
    ("empty-points-selectsamples", SS, {**POINTS, "VECTOR": "{empty_points}"},
     "found no candidate position in {empty_points}"),
    ("no-geometry-selectsamples", SS, {**POINTS, "VECTOR": "{no_geometry}"},
     "found no candidate position in {no_geometry}"),
    ("far-points-selectsamples", SS, {**POINTS, "VECTOR": "{far_points}"}, "none of the 2 positions"),
    ("empty-positions-extractpatches", EP, {**EXTRACT, "POSITIONS": "{empty_points}"},
     "no positions in {empty_points}: the layer is empty or its points have no geometry"),
    ("no-geometry-extractpatches", EP, {**EXTRACT, "POSITIONS": "{no_geometry}"},
     "no positions in {no_geometry}: the layer is empty"),
    ("far-positions-extractpatches", EP, {**EXTRACT, "POSITIONS": "{far_points}"}, "none of the 2 positions"),
    ("background-without-polygons-extractpatches", EP, {**EXTRACT, "LABEL_BACKGROUND": "background"},
     "(LABEL_BACKGROUND) is for segmentation polygons (LABEL_POLYGONS)"),
    ("empty-reference-evaluatemap", EM, {"INPUT": "{strata}", "REFERENCE_VECTOR": "{empty_points}",
                                         "CLASS_FIELD": "class", "OUTPUT_FOLDER": "{out}/evaluation"},
     "the reference layer {empty_points} is empty (no feature)"),
    ("no-geometry-reference-evaluatemap", EM, {"INPUT": "{strata}", "REFERENCE_VECTOR": "{no_geometry}",
                                               "CLASS_FIELD": "class", "OUTPUT_FOLDER": "{out}/evaluation"},
     "none of the 5 features of the reference layer {no_geometry} has a geometry"),
    ("far-reference-evaluatemap", EM, {"INPUT": "{strata}", "REFERENCE_VECTOR": "{far_points}",
                                       "CLASS_FIELD": "class", "OUTPUT_FOLDER": "{out}/evaluation"},
     "does not overlap the class map"),
    ("missing-positions-extractpatches", EP, {**EXTRACT, "POSITIONS": "{missing}"}, "(POSITIONS): {missing} does not exist"),
    ("text-positions-extractpatches", EP, {**EXTRACT, "POSITIONS": "{text_file}"},
     "(POSITIONS): {text_file} is not a vector layer QGIS can open"),
    ("missing-vector-selectsamples", SS, {**POINTS, "VECTOR": "{missing}"}, "(VECTOR): {missing} does not exist"),
    ("no-vector-selectsamples", SS, {**POINTS, "VECTOR": None}, "needs a vector layer"),
    ("missing-mask-applymodel", AM, {**APPLY, "MASK": "{missing}"}, "(MASK): {missing} does not exist"),
    # outputs that would destroy something
    ("dataset-over-a-users-folder", EP, {**EXTRACT, "OUTPUT": "{user_folder}"}, "{user_folder} already holds files"),
    ("dataset-over-a-file", EP, {**EXTRACT, "OUTPUT": "{user_file}"}, "{user_file} is an existing file"),
    ("dataset-over-its-positions", EP, {**EXTRACT, "OUTPUT": "{points}"}, "{points}"),
    ("model-over-a-users-folder", TM, {**TRAIN, "OUTPUT": "{user_folder}"}, "{user_folder} already holds files"),
    ("model-over-a-file", TM, {**TRAIN, "OUTPUT": "{user_file}"}, "{user_file} is an existing file"),
    ("model-over-its-dataset", TM, {**TRAIN, "OUTPUT": "{dataset}"}, "would overwrite the input {dataset}"),
    ("model-inside-its-dataset", TM, {**TRAIN, "OUTPUT": "{dataset}/model"}, "would overwrite the input {dataset}"),
    ("class-map-over-its-source", AM, {**APPLY, "OUTPUT": "{image}"}, "would overwrite the input {image}"),
    ("class-map-into-the-model", AM, {**APPLY, "OUTPUT": "{model}/classes.tif"}, "would overwrite the input {model}"),
    ("class-map-over-a-folder", AM, {**APPLY, "OUTPUT": "{a_folder}"}, "{a_folder} is an existing folder"),
    ("class-map-under-a-file", AM, {**APPLY, "OUTPUT": "{user_file}/classes.tif"}, "is a file, not a folder"),
    ("class-map-not-geotiff", AM, {**APPLY, "OUTPUT": "{out}/classes.png"}, "name the output *.tif"),
    ("positions-over-their-points", SS, {**POINTS, "OUTPUT": "{points}"}, "would overwrite the input {points}"),
    ("positions-not-geopackage", SS, {**GRID, "OUTPUT": "{out}/positions.shp"}, "GeoPackage (.gpkg)"),
    ("balance-over-the-image", SS, {**GRID, "REPORT": "{image}"}, "would overwrite the input {image}"),
    ("report-over-a-file", EM, {**EVALUATE, "OUTPUT_FOLDER": "{user_file}"}, "{user_file}"),
    ("report-folder-is-the-map", EM, {**EVALUATE, "OUTPUT_FOLDER": "{strata}"}, "{strata}"),
    # parameter values
    ("zero-epochs", TM, {**TRAIN, "EPOCHS": 0}, "Epochs (at most) (EPOCHS): 0 is not accepted: give a number >= 1"),
    ("negative-epochs", TM, {**TRAIN, "EPOCHS": -3}, "(EPOCHS): -3 is not accepted"),
    ("zero-batch", TM, {**TRAIN, "BATCH_SIZE": 0}, "(BATCH_SIZE): 0 is not accepted: give a number >= 1"),
    ("negative-batch", TM, {**TRAIN, "BATCH_SIZE": -8}, "(BATCH_SIZE): -8 is not accepted"),
    ("zero-learning-rate", TM, {**TRAIN, "LEARNING_RATE": 0}, "(LEARNING_RATE): 0 is not accepted"),
    ("unknown-architecture", TM, {**TRAIN, "ARCHITECTURE": 9}, "(ARCHITECTURE): 9 is not one of the choices"),
    ("bad-hyperparameters", TM, {**TRAIN, "HYPERPARAMETERS": "filters: 3"}, "Hyper-parameters are not valid JSON"),
    ("hyperparameters-not-an-object", TM, {**TRAIN, "HYPERPARAMETERS": "[1, 2]"}, "must be a JSON object"),
    ("negative-seed", TM, {**TRAIN, "SEED": -1}, "(SEED): -1 is not accepted"),
    ("missing-custom-model", TM, {**TRAIN, "CUSTOM_MODEL": "{missing}"}, "(CUSTOM_MODEL): {missing} does not exist"),
    ("custom-model-not-python", TM, {**TRAIN, "CUSTOM_MODEL": "{text_file}"},
     "(CUSTOM_MODEL): {text_file} is not accepted: give a .py file"),
    ("zero-patch-size", SS, {**GRID, "PATCH_SIZE": 0}, "(PATCH_SIZE): 0 is not accepted"),
    ("patch-bigger-than-image", SS, {**GRID, "PATCH_SIZE": 500}, "patch size 500"),
    ("splits-sum-to-2.7", SS, {**GRID, "TRAIN": 0.9, "VALID": 0.9, "TEST": 0.9}, "must sum to 1, but train 0.9"),
    ("splits-in-percent", SS, {**GRID, "TRAIN": 70, "VALID": 15, "TEST": 15}, "must sum to 1"),
    ("splits-all-zero", SS, {**GRID, "TRAIN": 0, "VALID": 0, "TEST": 0}, "split proportions"),
    ("negative-split", SS, {**GRID, "TRAIN": -0.5}, "(TRAIN): -0.5 is not accepted"),
    ("unknown-strategy", SS, {**GRID, "STRATEGY": 7}, "(STRATEGY): 7 is not one of the choices"),
    ("label-strategy-without-raster", SS, {**GRID, "STRATEGY": 2}, "needs a label raster (LABEL_RASTER)"),
    ("missing-class-field", SS, {**POINTS, "CLASS_FIELD": "klass"}, "klass"),
    ("blocks-without-block-split", SS, {**GRID, "SPLIT_MODE": 0, "BLOCKS": "{out}/blocks.gpkg"}, "spatial blocks split only"),
    ("negative-block-size", SS, {**GRID, "BLOCK_SIZE": -10}, "(BLOCK_SIZE): -10 is not accepted"),
    ("patch-sizes-not-numbers", EP, {**EXTRACT, "PATCH_SIZES": "big"}, "Patch sizes must be integers"),
    ("patch-sizes-count", EP, {**EXTRACT, "PATCH_SIZES": "16,16"}, "1 sources but 2 patch sizes"),
    ("names-count", EP, {**EXTRACT, "NAMES": "a,b"}, "1 sources but 2 names"),
    ("class-labels-without-field", EP, {**EXTRACT, "LABEL_KIND": 0, "CLASS_FIELD": ""}, "class field"),
    ("segmentation-without-raster", EP, {**EXTRACT, "LABEL_RASTER": None}, "need a label raster"),
    ("bad-class-names", EP, {**EXTRACT, "CLASSES": "one=water,two"}, "value=name"),
    ("patch-bigger-than-source", EP, {**EXTRACT, "PATCH_SIZES": "500"}, "patch size 500 is bigger than the image"),
    ("zero-shard-size", EP, {**EXTRACT, "SHARD_SIZE": 0}, "(SHARD_SIZE): 0 is not accepted"),
    ("unknown-label-kind", EP, {**EXTRACT, "LABEL_KIND": 5}, "(LABEL_KIND): 5 is not one of the choices"),
    ("negative-tile", AM, {**APPLY, "TILE_SIZE": -16}, "(TILE_SIZE): -16 is not accepted"),
    ("unknown-border", AM, {**APPLY, "BORDER": 9}, "(BORDER): 9 is not one of the choices"),
    ("no-source", AM, {**APPLY, "SOURCES": None}, "(SOURCES) is required"),
    ("wrong-band-count", AM, {**APPLY, "SOURCES": "{one_band}"}, "takes 6 band(s), but {one_band} has 1"),
    ("two-references", EM, {**EVALUATE, "REFERENCE_VECTOR": "{points}", "CLASS_FIELD": "class"},
     "Give exactly one reference"),
    ("no-reference", EM, {**EVALUATE, "REFERENCE_RASTER": None}, "Give exactly one reference"),
    ("reference-without-class-field", EM, {"INPUT": "{strata}", "REFERENCE_VECTOR": "{points}",
                                           "OUTPUT_FOLDER": "{out}/evaluation"}, "Choose the class field"),
    ("ignore-values-not-integers", EM, {**EVALUATE, "IGNORE_VALUES": "water"}, "Values to ignore must be integers"),
    ("an-image-as-class-map", EM, {**EVALUATE, "INPUT": "{image}"}, "{image} has 6 bands of float32: a class map"),
    ("everything-ignored", EM, {**EVALUATE, "IGNORE_VALUES": "0,1,2,3,4,5,6,7"}, "no valid pixel in common"),
    ("far-reference-raster", EM, {**EVALUATE, "REFERENCE_RASTER": "{far_raster}"},
     "{far_raster} does not overlap the class map"),
    ("text-of-no-class-name-evaluatemap", EM, {"INPUT": "{named_strata}", "REFERENCE_VECTOR": "{parking}",
                                               "CLASS_FIELD": "fclass", "OUTPUT_FOLDER": "{out}/evaluation"},
     "{parking}: no text of the class field 'fclass' is a class name: it holds 'parking'; the class names are "
     "'agriculture', 'developed', 'forest', 'herbaceous', 'sediment' and 2 more"),
    ("background-with-a-reference-raster", EM, {**EVALUATE, "BACKGROUND": "0"},
     "(BACKGROUND) is for reference polygons"),
    # datasets
    ("dataset-missing", TM, {**TRAIN, "DATASET": "{missing}"}, "{missing} is not a DeepField dataset"),
    ("dataset-is-a-file", TM, {**TRAIN, "DATASET": "{user_file}"}, "{user_file}"),
    ("dataset-not-a-dataset", TM, {**TRAIN, "DATASET": "{user_folder}"}, "is not a DeepField dataset"),
    ("dataset-missing-shard", TM, {**TRAIN, "DATASET": "{missing_shard}"}, "shard {shard} is missing"),
    ("dataset-truncated-shard", TM, {**TRAIN, "DATASET": "{truncated_shard}"}, "shard {shard} is damaged or truncated"),
    ("dataset-bad-manifest", TM, {**TRAIN, "DATASET": "{bad_manifest}"}, "manifest.json is not valid JSON"),
    # model folders
    ("model-missing", AM, {**APPLY, "MODEL": "{missing}"}, "model folder not found: {missing}"),
    ("model-not-a-model", AM, {**APPLY, "MODEL": "{not_a_model}"}, "{not_a_model} is not a DeepField model folder"),
    ("model-bad-json", AM, {**APPLY, "MODEL": "{bad_json_model}"}, "deepfield.json"),
    ("model-is-a-file", AM, {**APPLY, "MODEL": "{user_file}"}, "{user_file} is a file, not a model folder"),
    ("describe-not-a-model", DM, {"MODEL": "{not_a_model}"}, "{not_a_model} is not a DeepField model folder"),
    ("describe-negative-tile", DM, {"MODEL": "{model}", "TILE_SIZE": -1}, "(TILE_SIZE): -1 is not accepted"),
    ("describe-output-over-the-model", DM, {"MODEL": "{model}", "OUTPUT": "{model}/deepfield.json"},
     "would overwrite the input {model}"),
]
#: A sample run through qgis_process --json as well (one per kind of check).
THROUGH_QGIS_PROCESS = ("missing-extractpatches-SOURCES", "no_crs-selectsamples-INPUT", "dataset-over-a-users-folder",
                        "class-map-over-its-source", "zero-epochs", "dataset-truncated-shard",
                        "an-image-as-class-map", "splits-sum-to-2.7")


def resolve(value, world: dict, out: Path):
    if isinstance(value, str):
        return value.format(**world, out=out)
    return value


def prepared(case, world: dict, out: Path) -> tuple[str, dict, str]:
    _, algorithm, parameters, message = case
    parameters = {key: resolve(value, world, out) for key, value in parameters.items() if value is not None}
    return algorithm, parameters, resolve(message, world, out)


def assert_no_output(out: Path) -> None:
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not left, f"a failed run left {left}"


@pytest.fixture
def out(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_the_probe_suite_is_large_and_its_names_unique():
    names = [case[0] for case in CASES]
    assert len(names) >= 100 and len(set(names)) == len(names)
    assert set(THROUGH_QGIS_PROCESS) <= set(names)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_in_process(qgis_app, world, out, case):
    import processing
    from qgis.core import QgsProcessingException

    algorithm, parameters, message = prepared(case, world, out)
    before = folder_digest(Path(world["world"]))
    with pytest.raises(QgsProcessingException) as caught:
        processing.run(algorithm, parameters)
    said = str(caught.value)
    assert message in said, said
    assert "Traceback" not in said and "Incorrect parameter value" not in said
    assert_no_output(out)
    assert folder_digest(Path(world["world"])) == before


@pytest.mark.parametrize("name", THROUGH_QGIS_PROCESS)
def test_with_qgis_process(qgis_process, world, out, name):
    case = next(case for case in CASES if case[0] == name)
    algorithm, parameters, message = prepared(case, world, out)
    before = folder_digest(Path(world["world"]))
    done = qgis_process("--json", "run", algorithm, "--", *parameter_args(parameters), timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert said.count(message) == 1, said[-3000:]
    assert "Traceback" not in said and "Unable to load" not in said
    assert_no_output(out)
    assert folder_digest(Path(world["world"])) == before
