"""DeepField: a QGIS Processing plugin for deep learning on remote-sensing rasters.

Importing this package imports nothing from QGIS: the engine subpackage is run
as ``python -m deepfield.engine`` in a separate interpreter and shares it.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """QGIS entry point: return the plugin instance."""
    from .plugin import DeepFieldPlugin

    return DeepFieldPlugin(iface)
