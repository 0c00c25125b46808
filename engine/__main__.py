"""Command line: ``python -m deepfield.engine SPEC`` runs one job spec.

SPEC is a JSON file, ``-`` for standard input, or inline JSON. The spec holds
``{"job": name, ...job parameters}``. Exit codes: 0 done, 1 engine error,
2 unexpected failure, 3 cancelled. Messages are JSON lines (see :mod:`.protocol`).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from .errors import InvalidSpec
from .jobs import get_job
from .protocol import EngineError, JobCancelled, Reporter


def read_spec(argument: str) -> dict:
    """The job spec in ``argument`` (``-``, inline JSON or a file); :class:`InvalidSpec` when it
    cannot be read or is not a JSON object."""
    where = "standard input" if argument == "-" else "the inline spec" if argument.lstrip().startswith("{") else argument
    try:
        if argument == "-":
            spec = json.load(sys.stdin)
        elif argument.lstrip().startswith("{"):
            spec = json.loads(argument)
        else:
            with open(argument, encoding="utf-8") as handle:
                spec = json.load(handle)
    except OSError as error:
        raise InvalidSpec(f"cannot read the job spec {argument}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InvalidSpec(f"the job spec in {where} is not valid JSON: {error}") from None
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the job spec in {where} must be a JSON object {{\"job\": name, ...}}, "
                          f"not {type(spec).__name__}")
    return spec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    # Keep TensorFlow's C++ chatter off the protocol and the log unless asked for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    reporter = Reporter()
    reporter.install_signal_handlers()
    try:
        spec = read_spec(argv[0])
        job = get_job(spec.get("job", ""))
        result = job(spec, reporter)
        reporter.result(result or {})
        return 0
    except JobCancelled:
        reporter.emit({"type": "cancelled"})
        return 3
    except EngineError as error:
        reporter.emit({"type": "error", "kind": "EngineError", "message": str(error), "traceback": ""})
        return 1
    except Exception as error:
        reporter.emit(
            {
                "type": "error",
                "kind": type(error).__name__,
                "message": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
