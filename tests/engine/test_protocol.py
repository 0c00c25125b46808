"""The engine command line, the JSON-lines protocol, and atomic outputs."""

import json
import subprocess
import sys

import pytest

from deepfield.engine.outputs import atomic_output, part_path
from deepfield.engine.protocol import PARENT_PID_ENV

from ..conftest import PLUGINPATH


def run_engine(spec: dict) -> tuple[int, list[dict]]:
    done = subprocess.run([sys.executable, "-m", "deepfield.engine", json.dumps(spec)], cwd=PLUGINPATH,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_command_line_runs_a_job_spec_without_qgis():
    code, messages = run_engine({"job": "check_environment"})
    assert code == 0
    result = [m for m in messages if m["type"] == "result"][0]["result"]
    assert result["tensorflow"].startswith("2.21") and result["gdal"].startswith("3.")


def test_unknown_job_is_a_structured_error():
    code, messages = run_engine({"job": "frobnicate"})
    assert code == 1
    error = messages[-1]
    assert error["type"] == "error" and error["kind"] == "EngineError"
    assert "frobnicate" in error["message"] and "check_environment" in error["message"]


@pytest.mark.parametrize("argument, message", [
    ("{not json", "the job spec in the inline spec is not valid JSON"),
    ("/nowhere/spec.json", "cannot read the job spec /nowhere/spec.json: No such file or directory"),
])
def test_unreadable_specs_are_structured_errors(argument, message):
    done = subprocess.run([sys.executable, "-m", "deepfield.engine", argument], cwd=PLUGINPATH,
                          capture_output=True, text=True, timeout=300)
    error = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 1 and error["type"] == "error" and error["kind"] == "EngineError"
    assert error["message"].startswith(message) and error["traceback"] == ""


def test_read_spec_types_the_error(tmp_path):
    from deepfield.engine.__main__ import read_spec
    from deepfield.engine.errors import InvalidSpec
    from deepfield.engine.jobs import get_job

    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(InvalidSpec, match=f"the job spec in {listed} must be a JSON object .*, not list"):
        read_spec(str(listed))
    with pytest.raises(InvalidSpec, match="unknown engine job 'frobnicate'; known jobs: apply_model"):
        get_job("frobnicate")
    assert read_spec('{"job": "check_environment"}') == {"job": "check_environment"}


def test_atomic_output_moves_into_place_only_on_success(tmp_path):
    target = tmp_path / "map.tif"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temp:
            temp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and not part_path(target).exists()
    with atomic_output(target) as temp:
        temp.write_text("new")
        temp.with_name(temp.name + ".aux.xml").write_text("<aux/>")
    assert target.read_text() == "new"
    assert (tmp_path / "map.tif.aux.xml").read_text() == "<aux/>"
    assert not part_path(target).exists()


def test_atomic_folder_output(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(ValueError):
        with atomic_output(target, folder=True) as temp:
            (temp / "a.txt").write_text("x")
            raise ValueError
    assert not target.exists() and not part_path(target).exists()
    with atomic_output(target, folder=True) as temp:
        (temp / "a.txt").write_text("x")
    assert (target / "a.txt").read_text() == "x"


def test_replacing_an_output_removes_the_old_outputs_side_files(tmp_path):
    """A float map rerun over a paletted one must not keep its .qml style, statistics or overviews."""
    target = tmp_path / "map.tif"
    stale = [tmp_path / "map.qml", tmp_path / "map.tif.aux.xml", tmp_path / "map.tif.ovr"]
    for path in [target] + stale:
        path.write_text("old")
    keep = [tmp_path / "map.tif.bak", tmp_path / "map_confidence.qml", tmp_path / "other.qml"]
    for path in keep:
        path.write_text("user's")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temp:
            temp.write_text("half")
            raise RuntimeError("disk full")
    assert all(path.read_text() == "old" for path in [target] + stale)  # a failed run loses nothing
    with atomic_output(target) as temp:
        temp.write_text("new")
        temp.with_name(temp.name + ".aux.xml").write_text("<new/>")
    assert target.read_text() == "new" and (tmp_path / "map.tif.aux.xml").read_text() == "<new/>"
    assert not (tmp_path / "map.qml").exists() and not (tmp_path / "map.tif.ovr").exists()
    assert all(path.read_text() == "user's" for path in keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["map.tif", "map.tif.aux.xml"] + [p.name for p in keep])


ORPHAN = f"""
import ctypes, os, sys, time
from deepfield.engine.protocol import Reporter
time.sleep(float(sys.argv[3]))  # the worker still starting (importing) when its parent dies
reporter = Reporter()
reporter.install_signal_handlers()
reporter.exit_with_parent(grace_s=float(sys.argv[2]))
print("armed", flush=True)
while not reporter.cancelled:
    time.sleep(0.05)
open(sys.argv[1], "w").write("cancelled" + os.environ.get("{PARENT_PID_ENV}", ""))  # not for its children
HOLD  # a job that does not reach its next check: ended after the grace period
"""
#: How the orphan holds on: in Python, or in C code that keeps the GIL (the watch cannot run then).
SLEEPS = "time.sleep(60)"
HOLDS_THE_GIL = "ctypes.PyDLL(None).sleep(60)"
#: Or while writing an output (and a GDAL side file): the grace exit removes both.
WRITES = """from deepfield.engine.outputs import atomic_output
with atomic_output(sys.argv[1] + ".tif") as temp:
    temp.write_text("half")
    temp.with_name(temp.name + ".aux.xml").write_text("<half/>")
    time.sleep(60)"""
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3], "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)  # run() returns when this parent dies
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
"""
#: Dies at once, as the plugin's runner would: the worker arms its watch a second later, adopted
#: by whatever process adopts orphans here (pid 1 or a subreaper).
EARLY_PARENT = f"""
import os, subprocess, sys
env = {{**os.environ, "{PARENT_PID_ENV}": str(os.getpid())}}
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3], "1.0"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
"""


@pytest.mark.parametrize("parent, hold", [(PARENT, SLEEPS), (EARLY_PARENT, SLEEPS), (PARENT, HOLDS_THE_GIL),
                                          (PARENT, WRITES)],
                         ids=["while-running", "before-armed", "gil-held", "writing"])
def test_the_worker_stops_when_its_parent_dies(tmp_path, parent, hold):
    """qgis_process killed: the worker is asked to stop at once and ends after the grace period,
    also when its parent died while the worker was still starting, and when the worker is stuck
    in C code holding the GIL (the kernel ends it); what it was writing does not outlive it."""
    import os
    import time

    flag = tmp_path / "cancelled"
    done = subprocess.run([sys.executable, "-c", parent, ORPHAN.replace("HOLD", hold), str(flag), "1.0"], cwd=PLUGINPATH,
                          capture_output=True, text=True, timeout=60)
    orphan = int(done.stdout.strip())
    started = time.monotonic()
    while time.monotonic() - started < 10 and not flag.exists():
        time.sleep(0.05)
    if not flag.exists():
        os.kill(orphan, 9)
        pytest.fail("the orphaned worker was not asked to stop")
    while time.monotonic() - started < 10:
        try:
            os.kill(orphan, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(orphan, 9)
        pytest.fail("the orphaned worker was still running 10 s after its parent died")
    assert flag.read_text() == "cancelled"
    assert time.monotonic() - started < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cancelled"]  # no .part, no side file


RUNNER_AS_PID_1 = f"""
import os, subprocess, sys
worker = '''
import time
from deepfield.engine.protocol import Reporter
reporter = Reporter()
reporter.install_signal_handlers()
reporter.exit_with_parent(grace_s=0.5)
time.sleep(1.5)
print("cancelled" if reporter.cancelled else "running")
'''
assert os.getpid() == 1
env = {{**os.environ, "{PARENT_PID_ENV}": str(os.getpid())}}
print(subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True, text=True).stdout)
"""


def test_a_runner_that_is_pid_1_keeps_its_worker():
    """qgis_process as a container's first process (pid 1): its worker is not taken for an orphan."""
    import shutil

    command = [shutil.which("unshare") or "unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", RUNNER_AS_PID_1]
    try:
        done = subprocess.run(command, cwd=PLUGINPATH, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no unshare here")
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot make a PID namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "running"


SIGNALLED_WHILE_CANCELLING = """
import time
from deepfield.engine.protocol import Reporter
reporter = Reporter()
reporter.install_signal_handlers()
print("ready", flush=True)
end = time.monotonic() + 2
while time.monotonic() < end:
    reporter.cancel()  # the signal handler may run inside this call: it must take no lock
print("done", flush=True)
"""


def test_a_stop_signal_while_the_job_cancels_does_not_hang_or_kill_it():
    """SIGTERM (the runner's cancel, the parent-death signal) arriving while the main thread is
    inside ``cancel()``: a lock taken there made the handler deadlock or recurse (once in CI, a
    worker that outlived qgis_process with every thread waiting on a futex)."""
    import os
    import signal
    import time

    worker = subprocess.Popen([sys.executable, "-c", SIGNALLED_WHILE_CANCELLING], cwd=PLUGINPATH,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "ready"
    started = time.monotonic()
    while worker.poll() is None and time.monotonic() - started < 1.5:  # over before its loop ends
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.0005)
    try:
        out, err = worker.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail("the worker hung in its stop signal's handler")
    assert (worker.returncode, out.strip()) == (0, "done"), err[-2000:]
