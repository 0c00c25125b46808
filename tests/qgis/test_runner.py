"""The worker bridge: progress relay, engine errors, crashes, and cancellation."""

import os
import textwrap
import threading
import time

import pytest
from qgis.core import QgsProcessingFeedback

from deepfield.algorithms.runner import EngineJobCancelled, EngineJobError, run_job

from .conftest import ENGINE_PYTHON


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos, self.warnings, self.progress = [], [], []
        self.progressChanged.connect(self.progress.append)

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)

    def pushWarning(self, warning):  # noqa: N802
        self.warnings.append(warning)


def test_progress_and_log_lines_reach_feedback():
    feedback = RecordingFeedback()
    result = run_job({"job": "check_environment"}, feedback, python=ENGINE_PYTHON)
    assert result["tensorflow"].startswith("2.21")
    assert 100.0 in feedback.progress
    assert any(line.startswith("gdal: ") for line in feedback.infos)


def test_engine_error_message_is_passed_on_without_traceback():
    with pytest.raises(EngineJobError) as caught:
        run_job({"job": "no_such_job"}, RecordingFeedback(), python=ENGINE_PYTHON)
    assert "unknown engine job 'no_such_job'" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_crashing_worker_is_reported_with_its_last_words(tmp_path):
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'boom: libsomething missing' >&2\nexit 7\n")
    crashing.chmod(0o755)
    with pytest.raises(EngineJobError, match=r"(?s)exited with code 7.*boom"):
        run_job({"job": "check_environment"}, RecordingFeedback(), python=str(crashing))


def test_cancel_kills_the_worker_group_and_removes_partial_output(tmp_path):
    """A worker that ignores SIGTERM and has a child: both are gone within seconds, and so are the
    .part files it left (the output's, its GDAL side file's, its class-map style's)."""
    output = tmp_path / "out.tif"
    (tmp_path / "out.tif.partial").write_text("not ours: kept")
    pids = tmp_path / "pids"
    stubborn = tmp_path / "python"
    stubborn.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        trap '' TERM
        sleep 300 &
        echo "$$ $!" > {pids}
        echo partial > {output}.part
        echo partial > {output}.part.aux.xml
        echo partial > {tmp_path / "out.qml.part"}
        i=0
        while true; do i=$((i+1)); echo '{{"type": "progress", "percent": 1}}'; sleep 0.1; done
        """))
    stubborn.chmod(0o755)
    feedback = RecordingFeedback()
    threading.Timer(1.0, feedback.cancel).start()
    started = time.monotonic()
    with pytest.raises(EngineJobCancelled):
        run_job({"job": "anything"}, feedback, python=str(stubborn), outputs=[str(output)])
    assert time.monotonic() - started < 15
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), f"process {pid} survived the cancel"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.tif.partial", "pids", "python"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (reaped later by init).
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_an_interpreter_without_tensorflow_says_so():
    """Debian's own python3 has GDAL but no TensorFlow: the message names both and the fix."""
    with pytest.raises(EngineJobError) as caught:
        run_job({"job": "check_environment"}, RecordingFeedback(), python="/usr/bin/python3")
    message = str(caught.value)
    assert "TensorFlow cannot be imported by the engine interpreter /usr/bin/python3" in message
    assert "Engine Python interpreter" in message
