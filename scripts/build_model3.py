"""Build processing_models/*.model3: every workflow of scripts/workflows/ as a Processing model.

The provider loads every ``processing_models/*.model3`` (algorithms/provider.py). Regenerate after
changing a workflow or an algorithm's parameters::

    .venv/bin/python scripts/build_model3.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "processing_models"


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["QT_HASH_SEED"] = "0"  # the same XML attribute order at every build: a diffable file
    sys.path.insert(0, str(REPO / ".build" / "plugins"))  # the package deepfield (make setup links it)
    sys.path.insert(0, str(REPO / "scripts"))
    from qgis.core import QgsApplication
    from qgis.testing import start_app

    start_app()
    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    from workflows import assemble, definitions

    MODELS.mkdir(exist_ok=True)
    for workflow in definitions():
        path = MODELS / workflow.file
        if not assemble(workflow).toFile(str(path)):
            print(f"cannot write {path}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
