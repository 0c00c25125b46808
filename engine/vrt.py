"""Faster VRT reads: a ``<ComplexSource>`` that only copies pixels is read as a ``<SimpleSource>``.

GDAL 3.6 (Debian 12) sends every pixel of a ``<ComplexSource>`` through a floating-point working
buffer even when the source applies no nodata, scaling, look-up table or colour expansion, and
``gdalbuildvrt -separate`` writes such sources for every band of a stack (the Sentinel-2 stacks of
the shared data, for one). Measured on bench/bench_serving.py's 2 x 2 mosaic of the 10 m stack, a
2048 x 2048 x 4 UInt16 window: 0.19 s through the ComplexSources, 0.021 s through the same VRT with
SimpleSources. :func:`simple_sources` gives the equivalent VRT (XML text, nested VRT files inlined);
the pixels read are the same (tests/engine/test_vrt.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .outputs import is_plain_path

#: The elements of a ComplexSource that only copies pixels (anything else: nodata, scaling, LUT,
#: colour-table component, mask band... keeps it a ComplexSource).
COPY_ONLY = frozenset({"SourceFilename", "SourceBand", "SourceProperties", "SrcRect", "DstRect"})
#: Band types a ComplexSource's float32 working buffer holds exactly: copying them through it or
#: directly gives the same values (wider integers and float64 may round in it).
EXACT_IN_FLOAT32 = frozenset({"Byte", "Int8", "UInt16", "Int16", "Float32"})
#: VRTs nested deeper than this are left as they are.
MAX_DEPTH = 8


def simple_sources(path: str) -> str:
    """``path`` itself, or, when it is a VRT (a ``.vrt`` file or VRT XML) with copy-only
    ComplexSources here or in the VRT files it reads, the XML of the same VRT with SimpleSources
    there, file names absolute and nested VRT files inlined as XML."""
    rewritten = _rewrite(path, 0)
    return path if rewritten is None else rewritten


def _rewrite(path: str, depth: int) -> str | None:
    """The rewritten XML of the VRT at ``path``, or None when it is not a plain VRT or nothing changes."""
    text, folder = _vrt_text(path)
    if text is None or depth > MAX_DEPTH:
        return None
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None  # GDAL reports what is wrong with it when it opens the path
    if root.tag != "VRTDataset" or root.get("subClass"):  # warped, pansharpened: their own readers
        return None
    changed = False
    for band in root.iter("VRTRasterBand"):
        if band.get("subClass"):  # derived bands (pixel functions) keep their sources
            continue
        for source in band:
            if source.tag not in ("SimpleSource", "ComplexSource"):
                continue
            if source.tag == "ComplexSource" and _copy_only(source, band.get("dataType")):
                source.tag = "SimpleSource"
                changed = True
            changed |= _resolve(source.find("SourceFilename"), folder, depth)
    return ET.tostring(root, encoding="unicode") if changed else None


def _vrt_text(path: str) -> tuple[str | None, Path | None]:
    """A VRT's XML and the folder its relative source names start from (None for XML text)."""
    if path.lstrip().startswith("<VRTDataset"):
        return path, None
    if not is_plain_path(path) or not path.lower().endswith(".vrt"):
        return None, None
    try:
        return Path(path).read_text(encoding="utf-8"), Path(path).resolve().parent
    except (OSError, UnicodeDecodeError):
        return None, None


def _copy_only(source: ET.Element, band_type: str | None) -> bool:
    """A ComplexSource that copies its source band's pixels as they are into a band of the same type."""
    properties = source.find("SourceProperties")
    return ({child.tag for child in source} <= COPY_ONLY and properties is not None
            and properties.get("DataType") == band_type and band_type in EXACT_IN_FLOAT32)


def _resolve(name: ET.Element | None, folder: Path | None, depth: int) -> bool:
    """Make a source file name absolute (the XML has no folder of its own) and inline a nested
    VRT when it is rewritten; whether it was (a source there became simple)."""
    if name is None or not name.text:
        return False
    if name.get("relativeToVRT") == "1" and folder is not None:
        name.text = str(folder / name.text)
        name.set("relativeToVRT", "0")
    nested = _rewrite(name.text, depth + 1)
    if nested is not None:
        name.text = nested
    return nested is not None
