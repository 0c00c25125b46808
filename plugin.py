"""The QGIS plugin object: registers the DeepField Processing provider."""

from qgis.core import QgsApplication

from .algorithms.provider import DeepFieldProvider


class DeepFieldPlugin:
    """Registers the provider in ``initProcessing`` so that ``qgis_process`` sees it too.

    The plugin adds no GUI of its own: its algorithms live in the Processing toolbox.
    ``iface`` is ``None`` under ``qgis_process`` and is never touched.
    """

    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = DeepFieldProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
