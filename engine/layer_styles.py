"""QGIS styles stored inside a GeoPackage: a categorized polygon style and the ``layer_styles`` table.

QGIS (3.22 and later) reads a GeoPackage layer's default style from the table ``layer_styles``
of the same file (the row whose ``f_table_name`` is the layer and ``useAsDefault`` is true), so
the style travels with the file: the layer shows its class colours wherever it is opened. The
table has the columns QGIS creates itself when a style is saved "in the database".
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from osgeo import ogr

from .classes import ClassStyle, rgb

ogr.UseExceptions()

STYLES_TABLE = "layer_styles"
#: (column, OGR type) of QGIS's ``layer_styles`` table, in QGIS's order.
STYLES_COLUMNS = (
    ("f_table_catalog", ogr.OFTString), ("f_table_schema", ogr.OFTString), ("f_table_name", ogr.OFTString),
    ("f_geometry_column", ogr.OFTString), ("styleName", ogr.OFTString), ("styleQML", ogr.OFTString),
    ("styleSLD", ogr.OFTString), ("useAsDefault", ogr.OFTInteger), ("description", ogr.OFTString),
    ("owner", ogr.OFTString), ("ui", ogr.OFTString), ("update_time", ogr.OFTDateTime),
)


def categorized_polygons_qml(classes: tuple[ClassStyle, ...], field: str) -> str:
    """A QGIS vector style (``.qml``) filling polygons by the integer ``field``: one category,
    colour and label per class (outline in the fill colour, so neighbours leave no hairline gap)."""
    categories = "\n".join(
        f'      <category render="true" symbol="{i}" value="{c.value}" label={quoteattr(c.name)}/>'
        for i, c in enumerate(classes))
    symbols = "\n".join(_fill_symbol(str(i), c.color) for i, c in enumerate(classes))
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} forceraster="0" symbollevels="0" enableorderby="0">
    <categories>
{categories}
    </categories>
    <symbols>
{symbols}
    </symbols>
  </renderer-v2>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerOpacity>1</layerOpacity>
</qgis>
"""


def _fill_symbol(name: str, color: str) -> str:
    r, g, b = rgb(color)
    props = {"color": f"{r},{g},{b},255", "style": "solid", "outline_color": f"{r},{g},{b},255",
             "outline_style": "solid", "outline_width": "0.1", "outline_width_unit": "MM", "joinstyle": "miter"}
    lines = "\n".join(f'          <prop k="{k}" v="{v}"/>' for k, v in props.items())
    return f"""      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
{lines}
        </layer>
      </symbol>"""


def store_default_style(dataset, layer, qml: str, style_name: str) -> None:
    """Store ``qml`` as the default QGIS style of ``layer`` in the GeoPackage ``dataset`` (open for
    writing), in its ``layer_styles`` table (created when missing)."""
    table = dataset.GetLayerByName(STYLES_TABLE)
    if table is None:
        table = dataset.CreateLayer(STYLES_TABLE, None, ogr.wkbNone)
        for column, kind in STYLES_COLUMNS:
            table.CreateField(ogr.FieldDefn(column, kind))
    row = ogr.Feature(table.GetLayerDefn())
    values = {"f_table_catalog": "", "f_table_schema": "", "f_table_name": layer.GetName(),
              "f_geometry_column": layer.GetGeometryColumn(), "styleName": style_name, "styleQML": qml,
              "styleSLD": "", "useAsDefault": 1, "description": "DeepField class colours", "owner": "", "ui": ""}
    for column, value in values.items():
        row.SetField(column, value)
    table.CreateFeature(row)
