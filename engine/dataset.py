"""The dataset folder: patches extracted for training, its writer and its readers.

Format ``deepfield-dataset`` version 1 (one folder, written atomically by ``extract_patches``)::

    <folder>/
      manifest.json           everything below, plus shapes, statistics and counts
      positions.gpkg          accepted positions = patch centres (reference source's CRS):
                              fields ``class`` (class value or null), ``split``, ``index``
                              (row of the sample in its split), ``input_row`` (1-based order
                              in the input positions layer: its fid for select_samples output)
      train/ valid/ test/     one sub-folder per non-empty split, shards of ``shard_size`` patches:
        <source>-00000.npy    [n, h, w, c] patches of one source, in its stored dtype
        labels-00000.npy      [n] int32 class indices | [n, h, w] int32 class indices
                              | [n, h, w, c] float32 target values

``manifest.json``::

    {"format": "deepfield-dataset", "version": 1,
     "sources": [{"name": "pan", "path": "...", "bands": 1, "patch_size": 64,
                  "spacing": [0.5, 0.5], "scale": "1", "dtype": "uint16", "crs_wkt": "...",
                  "nodata": [0.0], "mean": [412.3], "std": [97.1]}, ...],
     "label": {"kind": "class" | "segmentation" | "image", "patch_size": 32 | null,
               "spacing": [1.0, 1.0] | null, "bands": 1, "dtype": "int32" | "float32",
               "classes": [{"index": 0, "value": 1, "name": "developed", "color": "#e31a1c"}],
               "nodata": -99999 | null, "ignore_index": -1, "mean": [..], "std": [..]},
     "splits": {"train": 800, "valid": 100, "test": 100},
     "class_counts": {"train": [..per class index..], ...},   # patches ("class") or pixels
     "shards": {"train": [{"count": 800, "files": {"pan": "train/pan-00000.npy",
                                                  "labels": "train/labels-00000.npy"}}]},
     "rejected": {"outside": 3, "nodata": 12, "label_nodata": 0},
     "positions": "positions.gpkg"}

Conventions: a source's ``scale`` is its pixel spacing over the first source's, as a
:class:`fractions.Fraction` string ("2", "1/2"). Every source patch is centred on the same
physical point (docs/architecture.md, patch centre). Class labels are stored as class
*indices* ``0..K-1`` (``classes[i]["value"]`` is the raster/field value of index ``i``) and
``-1`` marks pixels to ignore (label nodata or a value outside ``classes``). ``mean``/``std``
are per band, over every pixel of the train split (float64 streaming moments); the reader
does not normalise (models normalise with them).

Reading: :func:`open_dataset` returns a :class:`DatasetReader` whose ``tf_dataset`` yields
``({source_name: float32 [B, h, w, c]}, labels)`` batches, with global shuffling (shards are
memory-mapped, so a dataset larger than RAM works), optional random crops and dihedral
augmentation (flips and 90-degree rotations), the same for every source and the labels of a
sample, and optional random band gains (:func:`random_gains`). The reader turns every band of a
nodata pixel into NaN (:func:`engine.nodata.to_nan`, with the manifest's per-band ``nodata``),
exactly as serving does; the train statistics ``mean``/``std`` count valid pixels only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import DATASET_LABELS, LABEL_KINDS, SPLITS, check_dataset_name
from .dihedral import dihedral
from .errors import EngineError
from .nodata import to_nan
from .rasters import invalid_pixels

FORMAT = "deepfield-dataset"
VERSION = 1
IGNORE_INDEX = -1
MANIFEST = "manifest.json"
POSITIONS = "positions.gpkg"
SHARD_BYTES = 16 * 2**20  # at most this many bytes of samples per shard (and per split in memory)
MOMENT_CHUNK = 1 << 18  # pixels per float64 statistics chunk (2 MB per band)


# -- streaming statistics --------------------------------------------------------------------

@dataclass
class BandMoments:
    """Per-band count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    bands: int
    count: int = 0
    mean: np.ndarray = None
    m2: np.ndarray = None

    def __post_init__(self):
        self.mean = np.zeros(self.bands) if self.mean is None else self.mean
        self.m2 = np.zeros(self.bands) if self.m2 is None else self.m2

    def add(self, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add ``values`` shaped ``[..., bands]`` (only the pixels where ``valid``, shaped
        ``[...]``, is true), in chunks of :data:`MOMENT_CHUNK` pixels (bounded float64 temporaries)."""
        flat = np.asarray(values).reshape(-1, self.bands)
        if valid is not None:
            flat = flat[np.asarray(valid).ravel()]
        for start in range(0, flat.shape[0], MOMENT_CHUNK):
            self._merge(flat[start:start + MOMENT_CHUNK].astype(np.float64))

    def _merge(self, chunk: np.ndarray) -> None:
        n = chunk.shape[0]
        if n == 0:
            return
        mean = chunk.mean(axis=0)
        chunk -= mean
        m2 = np.einsum("ij,ij->j", chunk, chunk)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count) if self.count else np.zeros(self.bands)


# -- writer ----------------------------------------------------------------------------------

def sample_shape(sources: list[dict], label: dict, name: str) -> tuple:
    """Per-sample array shape of source ``name`` or of the labels (``name == "labels"``)."""
    if name == DATASET_LABELS:
        if label["kind"] == "class":
            return ()
        size = int(label["patch_size"])
        return (size, size) if label["kind"] == "segmentation" else (size, size, int(label["bands"]))
    source = next(s for s in sources if s["name"] == name)
    return (int(source["patch_size"]), int(source["patch_size"]), int(source["bands"]))


def label_dtype(label: dict) -> str:
    return "float32" if label["kind"] == "image" else "int32"


@dataclass
class _Shard:
    arrays: dict  # name -> preallocated [capacity, ...] array
    count: int = 0


class DatasetWriter:
    """Writes patches into ``folder`` shard by shard; :meth:`close` writes the manifest.

    ``sources``: the manifest's source entries (``name``, ``bands``, ``patch_size``, ``dtype``
    ... without ``mean``/``std``, which the writer computes from the train split).
    ``label``: the manifest's label entry (``kind``, ``patch_size``, ``bands``, ``classes`` ...).
    Memory: one preallocated shard per split; a shard holds ``shard_size`` samples, fewer when
    that would exceed :data:`SHARD_BYTES`.
    """

    def __init__(self, folder: str | Path, sources: list[dict], label: dict, shard_size: int = 1024):
        self.folder = Path(folder)
        self.sources = [dict(s) for s in sources]
        for source in self.sources:
            check_dataset_name(source["name"])
        if label["kind"] not in LABEL_KINDS:
            raise EngineError(f"unknown label kind {label['kind']!r}; one of {', '.join(LABEL_KINDS)}")
        self.label = dict(label)
        self._dtypes = {**{s["name"]: s["dtype"] for s in self.sources}, DATASET_LABELS: label_dtype(self.label)}
        self._shapes = {name: sample_shape(self.sources, self.label, name) for name in self._dtypes}
        sample_bytes = sum(np.dtype(self._dtypes[n]).itemsize * int(np.prod(self._shapes[n])) for n in self._dtypes)
        self.shard_size = max(1, min(int(shard_size), SHARD_BYTES // sample_bytes))
        self._buffers: dict[str, _Shard | None] = dict.fromkeys(SPLITS)
        self._shards = {split: [] for split in SPLITS}
        self._counts = {split: 0 for split in SPLITS}
        n_classes = len(self.label.get("classes") or [])
        self._class_counts = {split: np.zeros(n_classes, dtype=np.int64) for split in SPLITS}
        self._moments = {s["name"]: BandMoments(int(s["bands"])) for s in self.sources}
        self._nodata = {s["name"]: list(s.get("nodata") or []) for s in self.sources}
        if self.label["kind"] == "image":
            self._moments[DATASET_LABELS] = BandMoments(int(self.label["bands"]))

    def add(self, split: str, patches: dict[str, np.ndarray], label) -> int:
        """Add one sample; returns its row index within ``split``.

        ``patches``: source name -> ``[h, w, c]`` array; ``label``: a class index (int), an
        ``[h, w]`` int array of class indices, or an ``[h, w, c]`` float array.
        """
        if split not in SPLITS:
            raise EngineError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
        if self._buffers[split] is None:
            self._buffers[split] = _Shard({name: np.empty((self.shard_size,) + self._shapes[name], dtype)
                                           for name, dtype in self._dtypes.items()})
        buffer = self._buffers[split]
        for name, array in buffer.arrays.items():
            array[buffer.count] = label if name == DATASET_LABELS else patches[name]
        buffer.count += 1
        self._count_classes(split, label)
        index = self._counts[split]
        self._counts[split] += 1
        if buffer.count >= self.shard_size:
            self._flush(split)
        return index

    def _count_classes(self, split: str, label) -> None:
        counts = self._class_counts[split]
        if self.label["kind"] == "class":
            counts[int(label)] += 1
        elif self.label["kind"] == "segmentation":
            values = np.asarray(label).ravel()
            counts += np.bincount(values[values >= 0], minlength=len(counts))[: len(counts)]

    def _flush(self, split: str) -> None:
        buffer = self._buffers[split]
        if buffer is None:
            return
        folder = self.folder / split
        folder.mkdir(parents=True, exist_ok=True)
        number = len(self._shards[split])
        files = {}
        for name, array in buffer.arrays.items():
            relative = f"{split}/{name}-{number:05d}.npy"
            np.save(self.folder / relative, array[:buffer.count])
            files[name] = relative
            if split == "train" and name in self._moments:
                values = array[:buffer.count]
                valid = ~invalid_pixels(values, self._nodata[name]) if name in self._nodata else None
                self._moments[name].add(values, valid)
        self._shards[split].append({"count": buffer.count, "files": files})
        self._buffers[split] = None

    def close(self, extra: dict | None = None) -> dict:
        """Flush the last shards, write ``manifest.json``; returns the manifest."""
        for split in SPLITS:
            self._flush(split)
        sources = []
        for source in self.sources:
            moments = self._moments[source["name"]]
            sources.append({**source, "mean": moments.mean.tolist(), "std": moments.std.tolist()})
        label = {**self.label, "ignore_index": IGNORE_INDEX, "dtype": label_dtype(self.label)}
        if DATASET_LABELS in self._moments:
            label.update(mean=self._moments[DATASET_LABELS].mean.tolist(), std=self._moments[DATASET_LABELS].std.tolist())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "sources": sources,
            "label": label,
            "splits": dict(self._counts),
            "class_counts": {split: counts.tolist() for split, counts in self._class_counts.items()},
            "shards": self._shards,
            "positions": POSITIONS,
            **(extra or {}),
        }
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return manifest


# -- reader ----------------------------------------------------------------------------------

def open_dataset(folder: str | Path) -> "DatasetReader":
    """Open a dataset folder written by ``extract_patches``; validates its manifest."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise EngineError(f"{folder} is not a DeepField dataset: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise EngineError(f"{path} is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise EngineError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"expected {FORMAT!r} version {VERSION}"
        )
    return DatasetReader(folder, manifest)


class DatasetReader:
    """Read access to one dataset folder (see the module docstring for the format)."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = Path(folder)
        self.manifest = manifest
        self._memmaps: dict = {}

    @property
    def source_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["sources"]]

    @property
    def label_kind(self) -> str:
        return self.manifest["label"]["kind"]

    def size(self, split: str) -> int:
        """Number of samples in ``split`` (0 for an empty or unknown split)."""
        return int(self.manifest["splits"].get(split, 0))

    def _shards(self, split: str) -> list[dict]:
        if split not in SPLITS:
            raise EngineError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
        return self.manifest["shards"].get(split, [])

    def check_files(self) -> None:
        """Every shard the manifest lists exists and holds its ``count`` samples of the manifest's
        shape (a whole ``.npy`` file, not truncated); an :class:`EngineError` names the first that
        does not. Cheap (headers only): run it before building a network."""
        for split in SPLITS:
            for shard in self._shards(split):
                for name, relative in shard["files"].items():
                    path = self.folder / relative
                    expected = (int(shard["count"]),) + self._shape(name)
                    try:
                        shape = self._array(relative).shape
                    except ValueError as error:  # numpy: truncated file or bad header
                        raise EngineError(f"dataset {self.folder}: shard {relative} is damaged or truncated "
                                          f"({path.stat().st_size} bytes; numpy says: {error}); extract the "
                                          "patches again") from None
                    if tuple(shape) != expected:
                        raise EngineError(f"dataset {self.folder}: shard {relative} holds an array of shape "
                                          f"{tuple(shape)}, the manifest says {expected}; extract the patches again")

    def _array(self, relative: str) -> np.ndarray:
        if relative not in self._memmaps:
            path = self.folder / relative
            if not path.is_file():
                raise EngineError(f"dataset {self.folder}: shard {relative} is missing (the manifest lists it); "
                                  "extract the patches again")
            self._memmaps[relative] = np.load(path, mmap_mode="r")
        return self._memmaps[relative]

    def take(self, split: str, indices) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Samples ``indices`` (rows of ``split``, in that order) as float32 sources and labels."""
        indices = np.asarray(indices, dtype=np.int64)
        shards = self._shards(split)
        ends = np.cumsum([s["count"] for s in shards])
        if indices.size and (indices.min() < 0 or indices.max() >= (ends[-1] if len(ends) else 0)):
            raise EngineError(f"dataset {self.folder}: index out of range for split {split!r}")
        which = np.searchsorted(ends, indices, side="right")
        dtypes = {**{name: np.float32 for name in self.source_names}, DATASET_LABELS: label_dtype(self.manifest["label"])}
        out = {name: np.empty((len(indices),) + self._shape(name), dtype) for name, dtype in dtypes.items()}
        for shard_number in np.unique(which):
            shard = shards[shard_number]
            rows = np.flatnonzero(which == shard_number)
            local = indices[rows] - (ends[shard_number] - shard["count"])
            for name in out:
                out[name][rows] = self._array(shard["files"][name])[local]
        labels = out.pop(DATASET_LABELS)
        for source in self.manifest["sources"]:
            to_nan(out[source["name"]], source.get("nodata"))
        return out, labels

    def _shape(self, name: str) -> tuple:
        return sample_shape(self.manifest["sources"], self.manifest["label"], name)

    def arrays(self, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The whole split in memory: ``({name: float32 [n, h, w, c]}, labels)`` (small datasets)."""
        return self.take(split, np.arange(self.size(split)))

    def tf_dataset(self, split: str, batch_size: int, shuffle: bool = True, seed: int = 0,
                   augment: bool = False, repeat: bool = False, crop: int = 0, gain_jitter: float = 0.0):
        """A ``tf.data.Dataset`` of ``({name: float32 [B, h, w, c]}, labels)`` batches.

        Labels: int32 ``[B]`` (class), int32 ``[B, h, w]`` (segmentation, -1 = ignore) or
        float32 ``[B, h, w, c]`` (image). ``shuffle`` reshuffles the whole split every epoch
        (seeded); ``crop`` (pixels, 0 = none) cuts one random ``crop`` x ``crop`` window per
        sample and step from its sources and label patch (:func:`random_crops`); ``augment``
        applies one random flip/90-degree rotation per sample to all its sources and its label
        patch; ``gain_jitter`` (0 = none) multiplies each sample's bands by random gains
        (:func:`random_gains`); the last batch may be smaller.
        """
        from .device import tensorflow

        tf = tensorflow()
        n = self.size(split)
        if n == 0:
            raise EngineError(f"dataset {self.folder}: split {split!r} is empty")
        names = self.source_names
        rng = np.random.default_rng(seed)

        def load(indices):
            sources, labels = self.take(split, indices)
            if crop:
                sources, labels = random_crops(sources, labels, self.label_kind, int(crop), rng)
            if augment:
                sources, labels = augment_batch(sources, labels, self.label_kind, rng)
            if gain_jitter:
                sources = random_gains(sources, float(gain_jitter), rng)
            return [sources[name] for name in names] + [labels]

        labels_type = tf.as_dtype(label_dtype(self.manifest["label"]))

        def to_tensors(indices):
            outputs = tf.numpy_function(load, [indices], [tf.float32] * len(names) + [labels_type])
            for tensor, name in zip(outputs, names + [DATASET_LABELS]):
                shape = self._shape(name)
                tensor.set_shape((None,) + ((crop, crop) + shape[2:] if crop and shape else shape))
            return {name: t for name, t in zip(names, outputs[:-1])}, outputs[-1]

        dataset = tf.data.Dataset.range(n)
        if shuffle:
            dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(int(batch_size)).map(to_tensors, num_parallel_calls=1)
        return dataset.prefetch(tf.data.AUTOTUNE)


def random_crops(sources: dict[str, np.ndarray], labels: np.ndarray, kind: str, size: int,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One random ``size`` x ``size`` window per sample, at the same place in every source patch
    and the label patch (pixels; the patches must share their grid and size: one spacing).
    Class labels are unchanged."""
    count = len(labels)
    patch = next(iter(sources.values())).shape[1]
    rows, cols = rng.integers(0, patch - size + 1, size=(2, count))
    out = {name: np.stack([a[i, r:r + size, c:c + size] for i, r, c in zip(range(count), rows, cols)])
           for name, a in sources.items()}
    if kind != "class":
        labels = np.stack([labels[i, r:r + size, c:c + size] for i, r, c in zip(range(count), rows, cols)])
    return out, labels


def random_gains(sources: dict[str, np.ndarray], jitter: float,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every band of every sample times its own gain, drawn uniformly in ``[1 - jitter, 1 + jitter]``
    (radiometric augmentation: the illumination, season and sensor differences a map meets).

    One gain per sample and band, the same over the patch's pixels, on the raw values (before the
    model's normalisation); nodata (NaN) stays NaN. The sources of a sample get independent gains,
    and every band is scaled: meant for radiances or reflectances, not elevations or indices."""
    out = {}
    for name, array in sources.items():
        gains = rng.uniform(1.0 - jitter, 1.0 + jitter, size=(array.shape[0],) + (1,) * (array.ndim - 2)
                            + array.shape[-1:])
        out[name] = array * gains.astype(array.dtype)
    return out


def augment_batch(sources: dict[str, np.ndarray], labels: np.ndarray, kind: str,
                  rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Apply one random element of the dihedral group (8 flips/rotations) per sample.

    The same transform is applied to every source patch and to the label patch of a sample
    (class labels are unchanged). Patches are square and share their centre, so the transform
    keeps them co-registered.
    """
    count = len(labels)
    ops = rng.integers(0, 8, size=count)
    out = {name: array.copy() for name, array in sources.items()}
    labels = labels.copy()
    for i, op in enumerate(ops):
        for name in out:
            out[name][i] = dihedral(out[name][i], int(op))
        if kind != "class":
            labels[i] = dihedral(labels[i], int(op))
    return out, labels
