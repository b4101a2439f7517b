"""Process control of the Slicer modules (LungTumorSegLib.slicer_glue.process).

Cancel ends the launcher and the engine it started.

PythonSlicer is a launcher that starts the real interpreter as a child; the scripts below do the same, so the
tests see exactly the process tree the modules see inside Slicer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from LungTumorSegLib.slicer_glue import process

LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])  # what PythonSlicer does with python-real
print(f"launcher {os.getpid()}", flush=True)
sys.exit(child.wait())
"""
DETACHING_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
print(f"launcher {os.getpid()}", flush=True)
"""  # exits at once: the engine is re-parented but keeps the output pipe open
ENGINE = """
import os, sys, time
print(f"engine {os.getpid()}", flush=True)
stop_file = sys.argv[1] if len(sys.argv) > 1 else ""
for step in range(600):
    if stop_file and os.path.exists(stop_file):
        print("stopped cleanly", flush=True)
        sys.exit(0)
    print(f"step {step}", flush=True)
    time.sleep(0.1)
sys.exit(5)
"""

pytestmark = pytest.mark.skipif(process.IS_WINDOWS, reason="the POSIX branch runs here; Windows uses taskkill /T")


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, text in (("launcher", LAUNCHER), ("detaching", DETACHING_LAUNCHER), ("engine", ENGINE)):
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(textwrap.dedent(text), encoding="utf-8")
    return paths


def wait_for(engine: process.EngineProcess, prefix: str, timeout: float = 30.0) -> tuple[str, list[str]]:
    """Read lines until one starts with ``prefix``; returns it and all lines read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in engine.read_lines():
            seen.append(line)
            if line.startswith(prefix):
                return line, seen
        time.sleep(0.02)
    raise AssertionError(f"no line starting with {prefix!r} in {timeout} s: {seen}")


def pids(engine: process.EngineProcess, timeout: float = 30.0) -> tuple[int, int]:
    """The launcher's and the engine's pid, whichever prints first (one read may hold both lines)."""
    found: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(found) < 2 and time.monotonic() < deadline:
        for line in engine.read_lines():
            name, _, pid = line.partition(" ")
            if name in ("launcher", "engine") and pid.isdigit():
                found[name] = int(pid)
        time.sleep(0.02)
    assert len(found) == 2, f"expected the launcher's and the engine's pid lines, got {found}"
    return found["launcher"], found["engine"]


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while process.pid_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process.pid_running(pid)


def test_cancel_kills_the_launcher_and_the_engine(scripts):
    engine = process.EngineProcess([sys.executable, scripts["launcher"], scripts["engine"]])
    engine.start()
    launcher_pid, engine_pid = pids(engine)
    assert launcher_pid == engine.pid and process.descendant_pids(launcher_pid) == [engine_pid]
    killed = engine.kill()
    assert killed == [engine_pid, launcher_pid]
    assert gone(launcher_pid) and gone(engine_pid)
    assert not engine.running and engine.killed  # the output pipe closed: nothing holds it any more
    assert engine.returncode == -signal.SIGKILL


def test_killing_only_the_launcher_leaves_the_engine_running(scripts):
    """The bug the tree kill fixes: QProcess.kill() on PythonSlicer ends the launcher, not the engine."""
    engine = process.EngineProcess([sys.executable, scripts["launcher"], scripts["engine"]])
    engine.start()
    launcher_pid, engine_pid = pids(engine)
    try:
        os.kill(launcher_pid, signal.SIGKILL)
        engine.popen.wait(10)
        time.sleep(0.3)
        assert process.pid_running(engine_pid), "the orphaned engine should still run"
        wait_for(engine, "step ")  # and still writes to the pipe
    finally:
        engine.kill()
    assert gone(engine_pid), "the process group kill reaches the re-parented engine"


def test_tree_kill_without_a_session_of_its_own(scripts):
    """A tree started without a new session (as QProcess does) is found through the parent chain (ps/psutil)."""
    popen = subprocess.Popen(
        [sys.executable, scripts["launcher"], scripts["engine"]], stdout=subprocess.PIPE, text=True
    )
    try:
        launcher_pid = int(popen.stdout.readline().split()[1])
        deadline = time.monotonic() + 30
        while not process.descendant_pids(launcher_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (engine_pid,) = process.descendant_pids(launcher_pid)
        assert process.kill_tree(launcher_pid) == [engine_pid, launcher_pid]
        popen.wait(10)
        assert gone(launcher_pid) and gone(engine_pid)
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.stdout.close()


def test_an_engine_left_behind_by_its_launcher_is_still_killed(scripts):
    engine = process.EngineProcess([sys.executable, scripts["detaching"], scripts["engine"]])
    engine.start()
    launcher_pid, engine_pid = pids(engine)
    engine.popen.wait(10)
    assert engine.running, "the engine holds the output pipe after its launcher exited"
    engine.kill()
    assert gone(engine_pid) and not engine.running


def test_graceful_stop_through_the_stop_file(scripts, tmp_path: Path):
    stop_file = tmp_path / "run" / "stop-request"
    engine = process.EngineProcess(
        [sys.executable, scripts["launcher"], scripts["engine"], stop_file], stop_file=stop_file
    )
    engine.start()
    wait_for(engine, "step 2")
    assert engine.request_stop() and stop_file.is_file()
    assert engine.wait(30) == 0
    assert "stopped cleanly" in engine.read_lines() and not engine.killed
    assert not engine.request_stop(), "nothing to stop once it ended"


def test_exit_code_and_every_output_line_are_kept(tmp_path: Path):
    script = tmp_path / "fails.py"
    script.write_text(
        "import sys\nfor i in range(2000): print(f'line {i}')\nprint('boom', file=sys.stderr)\nsys.exit(3)\n"
    )
    engine = process.EngineProcess([sys.executable, script], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    engine.start()
    assert engine.wait(30) == 3 and not engine.running
    lines = engine.read_lines()
    assert lines[0] == "line 0" and lines[1999] == "line 1999" and lines[-1] == "boom"
    assert engine.kill() == [] and not engine.killed


def test_a_program_that_cannot_start_raises_at_once(tmp_path: Path):
    engine = process.EngineProcess([str(tmp_path / "no" / "PythonSlicer"), "-m", "LungTumorSegLib"])
    with pytest.raises(FileNotFoundError):
        engine.start()
    assert not engine.running and engine.returncode is None and engine.kill() == []


def test_windows_branch_kills_the_tree_with_taskkill():
    assert process.windows_kill_command(4321) == ["taskkill", "/PID", "4321", "/T", "/F"]
