"""Start an engine process, read its output lines, and stop it together with every process it started.

Inside Slicer the engine runs under ``PythonSlicer``, the CTK launcher, which starts ``python-real`` as a child
process (Slicer's ``CMake/SlicerBlockInstallPython.cmake``). Killing the launcher alone leaves the engine running
and holding the GPU, so cancelling kills the whole tree, as SlicerMONAIAuto3DSeg's ``process.py`` does:

- POSIX: the engine starts in a new session; its process group is killed, and so is every descendant found with
  psutil (when importable) or ``ps`` (a descendant that left the group is still found by its parent chain).
- Windows: ``taskkill /PID <pid> /T /F`` (``QProcess.terminate`` posts WM_CLOSE, which console programs ignore).

No slicer/qt import: the Slicer modules poll :meth:`EngineProcess.read_lines` from a timer; pytest runs it as is.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

IS_WINDOWS = os.name == "nt"
KILL_WAIT_S = 10.0


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def pid_running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    psutil = _psutil()
    if psutil is not None:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    if IS_WINDOWS:
        out = subprocess.run(["tasklist", "/FI", f"PID eq {pid}", "/NH"], capture_output=True, text=True)
        return str(pid) in out.stdout
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 succeeded


def descendant_pids(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), parents before children."""
    psutil = _psutil()
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    if IS_WINDOWS:
        return []  # taskkill /T walks the tree itself
    out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=False)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(fields[0]))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        if child not in found:
            found.append(child)
            todo.extend(children.get(child, []))
    return found


def windows_kill_command(pid: int) -> list[str]:
    """``taskkill`` arguments that end ``pid`` and all its descendants at once."""
    return ["taskkill", "/PID", str(int(pid)), "/T", "/F"]


def kill_tree(pid: int, process_group: bool = False) -> list[int]:
    """Kill ``pid`` and its descendants; returns the pids signalled (descendants first, ``pid`` last).

    Args:
        pid: the root process (e.g. the PythonSlicer launcher).
        process_group: ``pid`` leads its own process group (POSIX ``start_new_session``): kill the group too.
    """
    targets = [*reversed(descendant_pids(pid)), pid]
    if IS_WINDOWS:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        subprocess.run(windows_kill_command(pid), capture_output=True, check=False, creationflags=flags)
        return targets
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
    if process_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return targets


class EngineProcess:
    """One engine command: output lines (stdout and stderr merged) read by a thread, tree kill, stop file.

    Args:
        command: program and arguments.
        env: environment (default: this process's).
        cwd: working directory.
        stop_file: a file the engine polls for a graceful stop (``--stop-file``); :meth:`request_stop` writes it.

    Raises:
        OSError: from :meth:`start` when the program cannot be started (missing, not executable).
    """

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        stop_file: str | Path | None = None,
    ) -> None:
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = str(cwd) if cwd else None
        self.stop_file = Path(stop_file) if stop_file else None
        self.popen: subprocess.Popen | None = None
        self.killed = False
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None

    # ---------------------------------------------------------------- start and read

    def start(self) -> None:
        """Start the process (in its own session on POSIX, without a console window on Windows)."""
        kwargs: dict = {}
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True
        self.popen = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, name="engine-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        try:
            for raw in iter(self.popen.stdout.readline, b""):
                self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        except (ValueError, OSError):  # the pipe was closed here (the reader was let go of): nothing more to read
            return
        self.popen.stdout.close()

    def read_lines(self) -> list[str]:
        """The output lines that arrived since the last call."""
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    @property
    def pid(self) -> int | None:
        """The started process's pid (the launcher's, under PythonSlicer)."""
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        """True until the process has exited and all of its output has been read by the thread."""
        if self.popen is None:
            return False
        return self.popen.poll() is None or bool(self._reader and self._reader.is_alive())

    @property
    def returncode(self) -> int | None:
        """The exit code once the process ended (negative signal number when killed on POSIX)."""
        return None if self.popen is None else self.popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end of the process and of its output; the exit code, None on timeout."""
        if self.popen is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if self._reader.is_alive():
                return None
        return self.popen.returncode

    # ---------------------------------------------------------------- stop

    def request_stop(self) -> bool:
        """Ask the engine to stop cleanly by writing its stop file; False when it has none (use :meth:`kill`)."""
        if self.stop_file is None or not self.running:
            return False
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.write_text(f"stop requested by process {os.getpid()} at {time.ctime()}\n", encoding="utf-8")
        return True

    def kill(self, wait_s: float = KILL_WAIT_S) -> list[int]:
        """Kill the process and everything it started; wait up to ``wait_s`` for the pipe to close."""
        if self.popen is None or self.popen.poll() is not None and not self.running:
            return []
        self.killed = True
        killed = kill_tree(self.popen.pid, process_group=not IS_WINDOWS)
        if self.popen.poll() is None:
            self.popen.kill()  # the tree kill did not reach it (e.g. taskkill missing): at least the root
        self.wait(wait_s)
        return killed


def python_executable() -> str:
    """The interpreter for engine commands: Slicer's ``PythonSlicer`` launcher when on PATH, else this one."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable
