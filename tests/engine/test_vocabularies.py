"""Each vocabulary is defined once, in engine/contract.py; the rules QGIS shares with the engine."""

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepfield.engine import contract
from deepfield.engine.contract import SOURCE_NAME_PATTERN, as_source_name, sibling_output

ROOT = Path(contract.__file__).resolve().parent.parent
#: Every upper-case tuple or dict of contract.py is a vocabulary.
VOCABULARIES = {name: value for name, value in vars(contract).items()
                if name.isupper() and isinstance(value, (tuple, dict))}


def copies(path: Path) -> list[str]:
    """``name (line n)`` for each literal tuple/list/dict in ``path`` equal to a contract vocabulary
    (a tuple equal to a dict vocabulary's values counts too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.Tuple, ast.List, ast.Dict)):
            continue
        try:
            value = ast.literal_eval(node)
        except ValueError:
            continue
        value = tuple(value) if isinstance(value, list) else value
        for name, vocabulary in VOCABULARIES.items():
            values = tuple(vocabulary.values()) if isinstance(vocabulary, dict) else None
            if value == vocabulary or (values and isinstance(value, tuple) and sorted(value, key=str) == sorted(values)):
                found.append(f"{name} (line {node.lineno})")
    return found


SCANNED = sorted(str(p.relative_to(ROOT)) for folder in ("engine", "algorithms") for p in (ROOT / folder).rglob("*.py")
                 if p.name != "contract.py") + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "scripts" / "workflows").glob("*.py"))


@pytest.mark.parametrize("relative", SCANNED)
def test_no_vocabulary_is_defined_outside_the_contract(relative):
    assert copies(ROOT / relative) == []


def test_the_guard_sees_a_copy(tmp_path):
    """The scan is not blind: a file spelling out border modes or report files is caught."""
    copy = tmp_path / "copy.py"
    copy.write_text('MODES = ("reflect", "symmetric", "edge", "constant")\n'
                    'FILES = ("confusion_matrix.csv", "metrics.json", "per_class.csv", "confusion_matrix.png", '
                    '"report.html")\n', encoding="utf-8")
    assert copies(copy) == ["BORDER_MODES (line 1)", "REPORT_FILES (line 2)"]
    assert len(SCANNED) > 20 and "algorithms/apply_model.py" in SCANNED


def test_sibling_output_names():
    assert sibling_output("/maps/out.tif", "confidence") == "/maps/out_confidence.tif"
    assert sibling_output("/maps/out.TIFF", "probabilities") == "/maps/out_probabilities.TIFF"
    assert sibling_output("/maps/out", "confidence") == "/maps/out_confidence.tif"


def test_layer_names_become_source_names():
    assert as_source_name("Band 1 (pan)") == "Band_1_pan"
    assert as_source_name("2020-06 image") == "s_2020_06_image"
    assert as_source_name("été") == "t"
    assert as_source_name("pan") == "pan"


@given(st.text(max_size=20))
def test_any_layer_name_becomes_a_valid_source_name(text):
    name = as_source_name(text)
    assert SOURCE_NAME_PATTERN.match(name)
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)  # the rule as documented, spelt out again
