"""Labels as users have them, through the whole chain on real data: polygons with a text class
field -> select_samples -> extract_patches (segmentation labels rasterised from the polygons)
-> train 1 epoch -> apply -> evaluate against the same polygons, matched by class name."""

import io
import json

import numpy as np
from osgeo import gdal, ogr

from deepfield.engine.dataset import open_dataset
from deepfield.engine.jobs.apply_model import run as apply_model_job
from deepfield.engine.jobs.evaluate_map import run as evaluate_map_job
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.jobs.train_model import run as train_model_job
from deepfield.engine.modelfolder import read_metadata
from deepfield.engine.protocol import Reporter

from ..rasterised import burnt

NC = "nc_landsat7_landcover"


def run(job, spec):
    stream = io.StringIO()
    result = job(spec, Reporter(stream))
    return result, [json.loads(line) for line in stream.getvalue().splitlines()]


def test_text_class_polygons_through_the_chain(data_dir, tmp_path):
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    polygons = str(data_dir / NC / "landsat96_polygons.shp")
    vector = ogr.Open(polygons)
    names = sorted({f.GetField("label") for f in vector.GetLayer(0)})
    selected, _ = run(select_samples_job, {
        "raster": image, "strategy": "polygons", "vector": polygons, "class_field": "label",
        "samples_per_class": 12, "patch_size": 16, "split": {"train": 0.7, "valid": 0.3}, "seed": 0,
        "output": str(tmp_path / "positions.gpkg")})
    assert [c["name"] for c in selected["classes"]] == names
    extracted, _ = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 16, "name": "landsat"}],
        "positions": str(tmp_path / "positions.gpkg"),
        "label": {"kind": "segmentation", "path": polygons, "class_field": "label"},
        "output": str(tmp_path / "dataset")})
    assert [c["name"] for c in extracted["classes"]] == names
    trained, said = run(train_model_job, {"dataset": str(tmp_path / "dataset"), "output": str(tmp_path / "model"),
                                       "architecture": "automatic", "epochs": 1, "batch_size": 8,
                                       "hyperparameters": {"depth": 2, "width": 4}})
    assert any("architecture (automatic): unet" in m.get("message", "") for m in said)
    # validation scores count labelled pixels only (outside every polygon = ignore index)
    confusion = json.loads((tmp_path / "model" / "confusion_matrix.json").read_text())["confusion_matrix"]
    _, valid_labels = open_dataset(tmp_path / "dataset").arrays("valid")
    assert int(np.sum(confusion)) == int((valid_labels >= 0).sum()) < valid_labels.size
    metadata = read_metadata(tmp_path / "model")
    assert [(c.value, c.name) for c in metadata.classes] == [(v, n) for v, n in enumerate(names, start=1)]
    run(apply_model_job, {"model": str(tmp_path / "model"), "sources": [image],
                          "output": str(tmp_path / "map.tif")})
    assert all(f'label="{n}"' in (tmp_path / "map.qml").read_text() for n in names)
    evaluated, _ = run(evaluate_map_job, {"map": str(tmp_path / "map.tif"), "reference": polygons,
                                          "class_field": "label", "output_folder": str(tmp_path / "evaluation")})
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    support = {row["name"]: row["support"] for row in metrics["classes"]}
    assert set(support) <= set(names) and sum(support.values()) > 0
    # independently: per class, the map's valid pixels whose centre is in one of its polygons
    class_map = gdal.Open(str(tmp_path / "map.tif"))
    valid = class_map.ReadAsArray() != class_map.GetRasterBand(1).GetNoDataValue()
    for name in names:
        assert support.get(name, 0) == int((burnt(class_map, polygons, f"label = '{name}'") & valid).sum()), name
