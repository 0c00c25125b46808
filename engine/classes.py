"""Classes of a class map: value, name, colour, and how QGIS is told about them.

One type, :class:`ClassStyle`, for datasets, models, class maps and evaluation reports.
Colours are ``#rrggbb`` strings; "" means "not given" (a default from :data:`PALETTE` is used
where one is needed).
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class ClassStyle:
    """A class of a class map: pixel value, name, colour ``#rrggbb``."""

    value: int
    name: str
    color: str = ""


def class_styles(items, unnamed: str = "{}") -> tuple[ClassStyle, ...]:
    """``ClassStyle`` of each ``{value, name, color}`` mapping (name and colour optional; a class
    without a name is called ``unnamed.format(value)``)."""
    return tuple(ClassStyle(int(c["value"]), str(c.get("name") or unnamed.format(int(c["value"]))),
                            str(c.get("color") or "")) for c in items)


#: Default class colours (ColorBrewer Paired), by class index, when a dataset names none.
PALETTE = ("#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#b2df8a",
           "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99")


def class_color(index: int) -> str:
    """The default colour of the ``index``-th class (the same in datasets, models and maps)."""
    return PALETTE[index % len(PALETTE)]


def rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (red, green, blue), 0..255."""
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def qml_classes(qml) -> dict[int, ClassStyle]:
    """Classes of a QGIS raster style (``.qml``): paletted ``paletteEntry`` or pseudocolor ``item``
    elements with an integer value and a label, by value; empty when the file is no style."""
    try:
        root = ElementTree.parse(qml).getroot()
    except ElementTree.ParseError:
        return {}
    classes = {}
    for entry in list(root.iter("paletteEntry")) + list(root.iter("item")):
        try:
            value = float(entry.get("value", ""))
        except ValueError:
            continue
        if value == int(value) and entry.get("label"):
            classes[int(value)] = ClassStyle(int(value), entry.get("label"), entry.get("color", "")[:7])
    return classes


def csv_classes(path) -> dict[int, ClassStyle]:
    """Classes of a CSV table, one row per class: ``value,name[,color]`` (a first row that does not
    start with an integer is a header and skipped); ``ValueError`` names the row that is wrong."""
    classes = {}
    with open(path, newline="", encoding="utf-8-sig") as file:
        for number, row in enumerate(csv.reader(file), start=1):
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            try:
                value = int(cells[0])
            except ValueError:
                if number == 1:
                    continue
                raise ValueError(f"{path}, row {number}: {row!r} does not start with an integer class value") from None
            if len(cells) < 2 or not cells[1]:
                raise ValueError(f"{path}, row {number}: write value,name or value,name,#rrggbb")
            classes[value] = ClassStyle(value, cells[1], cells[2] if len(cells) > 2 else "")
    return classes


def read_classes(path) -> dict[int, ClassStyle]:
    """Classes from a ``.qml`` style or a ``.csv`` table (see :func:`qml_classes`, :func:`csv_classes`)."""
    if Path(path).suffix.lower() == ".qml":
        return qml_classes(path)
    return csv_classes(path)


def class_map_qml(classes: tuple[ClassStyle, ...]) -> str:
    """A QGIS style (``.qml``) drawing band 1 with one colour and label per class."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.value}" color="{c.color}" label={quoteattr(c.name)} alpha="255"/>'
        for c in classes
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin><limits>None</limits><extent>WholeRaster</extent><statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower><cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor></minMaxOrigin>
      <colorPalette>
{entries}
      </colorPalette>
      <colorramp type="randomcolors" name="[source]"/>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" colorizeOn="0" grayscaleMode="0" colorizeRed="255" colorizeGreen="128"
      colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""
