"""Outputs never replace what the user did not ask to replace (engine/outputs.py)."""

from __future__ import annotations

import os

import pytest
from deepfield.engine.errors import EngineError
from deepfield.engine.outputs import MARKER, atomic_output, check_not_an_input, check_output_file, check_output_folder


def write_folder(path, text):
    with atomic_output(path, folder=True) as folder:
        (folder / "data.txt").write_text(text)


def test_a_folder_output_is_marked_and_replaced(tmp_path):
    target = tmp_path / "dataset"
    write_folder(target, "first")
    assert (target / MARKER).is_file()
    write_folder(target, "second")
    assert (target / "data.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # nothing left aside


def test_an_empty_folder_receives_an_output(tmp_path):
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "empty", "x")
    assert (tmp_path / "empty" / "data.txt").read_text() == "x"


def test_a_users_folder_is_never_replaced(tmp_path):
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "thesis.odt").write_text("years of work")
    with pytest.raises(EngineError, match="did not write"):
        check_output_folder(documents)
    with pytest.raises(EngineError, match="did not write"):
        write_folder(documents, "x")
    assert (documents / "thesis.odt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


def test_a_file_is_never_replaced_by_a_folder_nor_a_folder_by_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(EngineError, match="existing file"):
        write_folder(tmp_path / "notes.txt", "x")
    assert (tmp_path / "notes.txt").read_text() == "keep"
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "folder.tif" / "a").write_text("keep")
    with pytest.raises(EngineError, match="existing folder"):
        check_output_file(tmp_path / "folder.tif")
    assert (tmp_path / "folder.tif" / "a").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_an_unwritable_folder_is_refused_before_writing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(EngineError, match="no write permission"):
            check_output_file(locked / "out.tif")
    finally:
        locked.chmod(0o755)


def test_an_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "image.tif").write_text("x")
    with pytest.raises(EngineError, match="is a file, not a folder"):
        check_output_file(tmp_path / "image.tif" / "out.tif")


@pytest.mark.parametrize("output, inputs", [
    ("image.tif", ["image.tif"]),  # the same file
    ("./sub/../image.tif", ["image.tif"]),  # the same file, spelt otherwise
    ("dataset/model", ["dataset"]),  # inside an input folder
    ("work", ["work/image.tif"]),  # a folder output holding an input
])
def test_an_output_over_an_input_is_refused(tmp_path, monkeypatch, output, inputs):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(EngineError, match="would overwrite the input"):
        check_not_an_input([output], inputs)


def test_distinct_outputs_and_gdal_strings_pass(tmp_path):
    check_not_an_input([tmp_path / "out.tif"], [tmp_path / "image.tif", "<VRTDataset/>", "/vsizip/a.zip/b.tif",
                                               f"GPKG:{tmp_path / 'out.tif'}:table"])


def test_the_input_guard_sees_every_change(tmp_path):
    """The session guard over the shared data (tests/conftest.py) fails on an edit, a new side file, a removal."""
    from ..conftest import changes, folder_digest

    (tmp_path / "image.vrt").write_text("<VRTDataset/>")
    (tmp_path / "band.tif").write_bytes(b"II*\0")
    before = folder_digest(tmp_path)
    assert changes(before, folder_digest(tmp_path)) == []
    (tmp_path / "image.vrt").write_text("<VRTDataset><Metadata/></VRTDataset>")
    (tmp_path / "band.tif.aux.xml").write_text("<PAMDataset/>")
    (tmp_path / "band.tif").unlink()
    assert changes(before, folder_digest(tmp_path)) == ["changed: image.vrt", "removed: band.tif",
                                                        "new: band.tif.aux.xml"]


@pytest.mark.parametrize("name, document, replaced", [
    ("deepfield.json", {"format": "deepfield-model", "version": 1}, True),  # a model folder from before the marker
    ("manifest.json", {"format": "deepfield-dataset", "version": 1}, True),  # a dataset from before the marker
    ("manifest.json", {"name": "my web app"}, False),  # someone else's manifest
    ("deepfield.json", "not json", False),
])
def test_folders_deepfield_wrote_before_the_marker_are_recognised(tmp_path, name, document, replaced):
    import json

    old = tmp_path / "old"
    old.mkdir()
    (old / name).write_text(document if isinstance(document, str) else json.dumps(document))
    if replaced:
        write_folder(old, "new")
        assert (old / "data.txt").read_text() == "new" and not (old / name).exists()
    else:
        with pytest.raises(EngineError, match="did not write"):
            write_folder(old, "new")
        assert (old / name).exists()
