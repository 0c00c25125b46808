"""Dataset folder: writer, manifest, numpy and tf.data readers, augmentation consistency."""

import json

import numpy as np
import pytest

from deepfield.engine.dataset import DatasetWriter, dihedral, open_dataset
from deepfield.engine.protocol import EngineError


def block_mean(patch, factor=2):
    h, w, c = patch.shape
    return patch.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    """40 samples: pan 8x8x1 random, ms = 2x2 block means (4x4x1, float32), labels = pan % 3."""
    folder = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    writer = DatasetWriter(folder, [
        {"name": "pan", "bands": 1, "patch_size": 8, "dtype": "uint16"},
        {"name": "ms", "bands": 1, "patch_size": 4, "dtype": "float32"}],
        {"kind": "segmentation", "patch_size": 8, "bands": 1,
         "classes": [{"index": i, "value": i + 1, "name": str(i), "color": "#000000"} for i in range(3)]},
        shard_size=7)
    pans = rng.integers(0, 1000, size=(40, 8, 8, 1)).astype(np.uint16)
    for i, pan in enumerate(pans):
        label = (pan[..., 0] % 3).astype(np.int32)
        label[0, 0] = -1
        writer.add("train" if i < 30 else "valid", {"pan": pan, "ms": block_mean(pan.astype(np.float32))}, label)
    manifest = writer.close({"rejected": {"outside": 0}})
    return folder, pans, manifest


def test_manifest_and_arrays(segmentation):
    folder, pans, manifest = segmentation
    stored = json.loads((folder / "manifest.json").read_text())
    assert stored["format"] == "deepfield-dataset" and stored["version"] == 1
    assert stored["splits"] == {"train": 30, "valid": 10, "test": 0}
    assert len(stored["shards"]["train"]) == 5  # 7 + 7 + 7 + 7 + 2
    reader = open_dataset(folder)
    assert reader.size("train") == 30 and reader.size("test") == 0
    sources, labels = reader.arrays("train")
    assert sources["pan"].dtype == np.float32 and sources["pan"].shape == (30, 8, 8, 1)
    np.testing.assert_array_equal(sources["pan"], pans[:30])
    assert labels.dtype == np.int32 and labels.shape == (30, 8, 8) and labels[0, 0, 0] == -1
    train = pans[:30].reshape(-1).astype(np.float64)
    np.testing.assert_allclose(stored["sources"][0]["mean"], [train.mean()])
    np.testing.assert_allclose(stored["sources"][0]["std"], [train.std()])
    counts = np.bincount((pans[:30, ..., 0] % 3).reshape(30, -1)[:, 1:].ravel(), minlength=3)
    assert stored["class_counts"]["train"] == counts.tolist()
    picked, _ = reader.take("valid", [9, 0, 4])
    np.testing.assert_array_equal(picked["pan"], pans[[39, 30, 34]])


def test_tf_dataset_shuffle_and_augment(segmentation):
    folder, pans, _ = segmentation
    reader = open_dataset(folder)
    first = [x["pan"].numpy() for x, _ in reader.tf_dataset("train", 8, shuffle=True, seed=3)]
    again = [x["pan"].numpy() for x, _ in reader.tf_dataset("train", 8, shuffle=True, seed=3)]
    assert [b.shape[0] for b in first] == [8, 8, 8, 6]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    seen = sorted(map(bytes, np.concatenate(first).astype(np.uint16)))
    assert seen == sorted(map(bytes, pans[:30]))  # every sample once per epoch
    assert not np.array_equal(np.concatenate(first), pans[:30].astype(np.float32))
    changed = 0
    for x, labels in reader.tf_dataset("train", 10, shuffle=False, augment=True, seed=1):
        pan, ms, labels = x["pan"].numpy(), x["ms"].numpy(), labels.numpy()
        assert labels.dtype == np.int32 and x["pan"].dtype.name == "float32"
        for i in range(len(pan)):
            np.testing.assert_allclose(ms[i], block_mean(pan[i]), rtol=1e-6)
            valid = labels[i] >= 0
            assert valid.sum() == 63  # the one ignored pixel moved with the patch
            np.testing.assert_array_equal(labels[i][valid], (pan[i][..., 0] % 3)[valid])
        changed += int((pan != pans[:10].astype(np.float32)).any(axis=(1, 2, 3)).sum())
    assert changed > 0


def test_dihedral_group():
    patch = np.arange(16).reshape(4, 4, 1)
    images = {dihedral(patch, op).tobytes() for op in range(8)}
    assert len(images) == 8


def test_class_and_image_labels(tmp_path):
    writer = DatasetWriter(tmp_path / "c", [{"name": "s2", "bands": 2, "patch_size": 3, "dtype": "float32"}],
                           {"kind": "class", "patch_size": None, "bands": 1,
                            "classes": [{"index": 0, "value": 10}, {"index": 1, "value": 20}]})
    for i in range(5):
        writer.add("test", {"s2": np.full((3, 3, 2), i, np.float32)}, i % 2)
    writer.close()
    dataset = open_dataset(tmp_path / "c").tf_dataset("test", 4, shuffle=False)
    x, y = next(iter(dataset))
    assert y.dtype.name == "int32" and y.numpy().tolist() == [0, 1, 0, 1]
    writer = DatasetWriter(tmp_path / "i", [{"name": "lr", "bands": 1, "patch_size": 2, "dtype": "int16"}],
                           {"kind": "image", "patch_size": 4, "bands": 3, "classes": []})
    writer.add("train", {"lr": np.ones((2, 2, 1), np.int16)}, np.full((4, 4, 3), 0.5))
    manifest = writer.close()
    assert manifest["label"]["mean"] == [0.5, 0.5, 0.5]
    _, labels = open_dataset(tmp_path / "i").arrays("train")
    assert labels.dtype == np.float32 and labels.shape == (1, 4, 4, 3)


def test_errors(tmp_path):
    with pytest.raises(EngineError, match="manifest.json is missing"):
        open_dataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(EngineError, match="expected 'deepfield-dataset'"):
        open_dataset(tmp_path)
    with pytest.raises(EngineError, match="invalid source name"):
        DatasetWriter(tmp_path / "x", [{"name": "1bad", "bands": 1, "patch_size": 2, "dtype": "uint8"}],
                      {"kind": "class", "classes": []})


@pytest.mark.parametrize("damage, message", [
    (lambda shard: shard.unlink(), "shard train/ms-00002.npy is missing"),
    (lambda shard: shard.write_bytes(shard.read_bytes()[:150]), "shard train/ms-00002.npy is damaged or truncated"),
    (lambda shard: np.save(shard, np.zeros((3, 4, 4, 1), np.float32)),
     r"shard train/ms-00002.npy holds an array of shape \(3, 4, 4, 1\), the manifest says \(7, 4, 4, 1\)"),
])
def test_damaged_shards_are_found_before_reading(segmentation, tmp_path, damage, message):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(segmentation[0], folder)
    open_dataset(folder).check_files()  # intact
    damage(folder / "train" / "ms-00002.npy")
    with pytest.raises(EngineError, match=message):
        open_dataset(folder).check_files()
