"""Import model: a network trained elsewhere (Keras file or TensorFlow SavedModel) -> a model folder."""

import json

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..engine.contract import MODEL_TASKS, ImportModelSpec
from .base import EngineAlgorithm, parse_classes

TASK_LABELS = ("Classification (one class per output pixel block)", "Segmentation (dense class map)",
               "Regression (float outputs)", "Super-resolution (an image at a finer spacing)")


def parse_sources(text: str, receptive_fields: str) -> list[dict]:
    """Sources from ``"pan:1, ms:4:2"`` (name[:bands[:scale]], in the network's input order) and
    optional receptive fields ``"16, 8"`` (one per source, its pixels)."""
    sources = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, *rest = [cell.strip() for cell in item.split(":")]
        if not name or len(rest) > 2:
            raise QgsProcessingException(f"Source {item!r}: write name, name:bands or name:bands:scale "
                                         "(e.g. pan:1:1, ms:4:2), separated by commas")
        source = {"name": name}
        if rest and rest[0]:
            if not rest[0].isdigit():
                raise QgsProcessingException(f"Source {item!r}: the band count {rest[0]!r} is not a whole number")
            source["bands"] = int(rest[0])
        if len(rest) > 1 and rest[1]:
            source["scale"] = rest[1]
        sources.append(source)
    if not sources:
        raise QgsProcessingException("Give the sources, e.g. 'image:4' or 'pan:1:1, ms:4:2'.")
    fields = [cell.strip() for cell in receptive_fields.split(",") if cell.strip()]
    if fields and len(fields) != len(sources):
        raise QgsProcessingException(f"Give one receptive field per source ({len(sources)}), not {len(fields)}.")
    for source, field in zip(sources, fields):
        if not field.isdigit():
            raise QgsProcessingException(f"Receptive field {field!r} of {source['name']}: not a whole number of pixels")
        source["rf"] = int(field)
    return sources


def parse_normalisation(text: str, sources: list[dict]) -> None:
    """Add ``mean``/``std`` to the sources from ``{"pan": {"mean": [..], "std": [..]}}`` (JSON)."""
    if not text.strip():
        return
    try:
        stats = json.loads(text)
    except ValueError as error:
        raise QgsProcessingException(f"Normalisation is not valid JSON: {error}") from None
    names = {source["name"]: source for source in sources}
    if not isinstance(stats, dict) or not all(isinstance(v, dict) for v in stats.values()):
        raise QgsProcessingException('Normalisation must be a JSON object such as {"pan": {"mean": [412.3], '
                                     '"std": [97.1]}}')
    for name, values in stats.items():
        if name not in names:
            raise QgsProcessingException(f"Normalisation for {name!r}: no such source ({', '.join(names)})")
        names[name].update({key: values.get(key) for key in ("mean", "std")})


class ImportModel(EngineAlgorithm):
    ALG_ID = "importmodel"
    DISPLAY_NAME = "Import model"
    GROUP_ID = "serving"
    HELP = (
        "Turns a network trained elsewhere into a DeepField model folder that Describe model and "
        "Apply model use like a trained one: a Keras file (.keras, .h5) or a TensorFlow SavedModel "
        "folder (for instance written by OTBTF's Python API or tf.saved_model.save; SavedModels with "
        "one image input).\n\n"
        "Sources: one per network input, in its input order (the first is the reference), as "
        "name[:bands[:scale]], e.g. 'pan:1:1, ms:4:2' (scale: the source's pixel spacing over the "
        "reference's). Band counts and scales are checked against the network.\n\n"
        "The receptive field (RF), expression field (EF) and spacing scale (SF) are derived from the "
        "network and proven by running it tiled and whole. Leave them empty; if you give the OTBTF "
        "values, they are checked and a mismatch is an error stating both. A network with a fixed "
        "input size (e.g. a patch classifier with Flatten and Dense) is served on windows of exactly "
        "that size, one output block per window; its spacing scale (default 1) sets how far apart "
        "the windows are, in reference pixels per output pixel.\n\n"
        "Classes (classifiers, in output channel order): 'value=name:#rrggbb, ...' or a QGIS style "
        "(.qml) or a CSV file (value,name,color). Normalisation (optional): per-band mean and std, "
        "applied inside the model before the network, as JSON: {\"pan\": {\"mean\": [412.3], "
        "\"std\": [97.1]}}. A network whose outputs differ in size (OTBTF also emits cropped copies "
        "of an output) is served with the outputs named in 'Network outputs to serve'."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "NETWORK", "Keras network file (.keras, .h5)", fileFilter="Keras models (*.keras *.h5 *.hdf5)",
            optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "SAVED_MODEL", "or a TensorFlow SavedModel folder", behavior=QgsProcessingParameterFile.Folder,
            optional=True))
        self.addParameter(QgsProcessingParameterEnum("TASK", "Task", options=list(TASK_LABELS), defaultValue=1))
        self.addParameter(QgsProcessingParameterString(
            "SOURCES", "Sources: name[:bands[:scale]], in the network's input order", defaultValue="image"))
        self.addParameter(QgsProcessingParameterString(
            "CLASSES", "Classes: value=name[:#rrggbb], comma separated", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "CLASSES_FILE", "or classes from a style (.qml) or a table (.csv)",
            fileFilter="QGIS styles or CSV tables (*.qml *.csv)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "NORMALISATION", "Normalisation (JSON: per source, per band mean and std)", defaultValue="",
            optional=True, multiLine=True))
        advanced = [
            QgsProcessingParameterString(
                "RECEPTIVE_FIELDS", "Declared receptive fields (OTBTF; per source, its pixels; empty: derived)",
                defaultValue="", optional=True),
            QgsProcessingParameterNumber(
                "EXPRESSION_FIELD", "Declared expression field (output pixels; 0: derived)",
                QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0),
            QgsProcessingParameterString(
                "SPACING_SCALE", "Declared spacing scale (output spacing / reference spacing; empty: derived)",
                defaultValue="", optional=True),
            QgsProcessingParameterString(
                "ENDPOINT", "SavedModel signature", defaultValue=ImportModelSpec.endpoint),
            QgsProcessingParameterString(
                "NETWORK_OUTPUTS", "Network outputs to serve (names, comma separated; empty: all)",
                defaultValue="", optional=True),
        ]
        self.add_advanced(*advanced)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))
        self.addOutput(QgsProcessingOutputString("MODEL", "Model folder path (for Apply model in the modeler)"))

    def build_job(self, parameters, context, feedback):
        network = self.parameterAsFile(parameters, "NETWORK", context)
        saved_model = self.parameterAsFile(parameters, "SAVED_MODEL", context)
        if bool(network) == bool(saved_model):
            raise QgsProcessingException("Give either a Keras network file or a SavedModel folder (one of them).")
        sources = parse_sources(self.parameterAsString(parameters, "SOURCES", context),
                                self.parameterAsString(parameters, "RECEPTIVE_FIELDS", context))
        parse_normalisation(self.parameterAsString(parameters, "NORMALISATION", context), sources)
        output = self.parameterAsString(parameters, "OUTPUT", context)
        spec = ImportModelSpec(
            network=network or saved_model,
            output=output,
            task=MODEL_TASKS[self.parameterAsEnum(parameters, "TASK", context)],
            sources=sources,
            classes=parse_classes(self.parameterAsString(parameters, "CLASSES", context)),
            classes_file=self.parameterAsFile(parameters, "CLASSES_FILE", context) or None,
            expression_field=self.parameterAsInt(parameters, "EXPRESSION_FIELD", context) or None,
            spacing_scale=self.parameterAsString(parameters, "SPACING_SCALE", context).strip() or None,
            endpoint=self.parameterAsString(parameters, "ENDPOINT", context).strip() or ImportModelSpec.endpoint,
            outputs=[name.strip() for name in self.parameterAsString(parameters, "NETWORK_OUTPUTS", context).split(",")
                     if name.strip()],
        )
        return spec.to_dict(), [output]

    def make_results(self, result, parameters, context, feedback):
        meta = result["metadata"]
        feedback.pushInfo(f"Imported: {meta['task']}, EF {meta['ef']}, SF {meta['sf']}, RF "
                          + ", ".join(f"{i['name']} {i['rf']} px" for i in meta["inputs"]))
        return {"OUTPUT": result["output"], "MODEL": result["output"]}
