"""Process control shared by the Slicer logics that run the engine: start, read progress, cancel, finish.

One engine run at a time per logic, in its own process (``process.EngineProcess``: own session, the whole
process tree killed on Cancel, on a scene close and on a module reload). The blocking ``run`` of a logic waits
here; the GUI's ``runAsync`` is polled by a Qt timer, the only Qt object, created on first use so the logics
import and run without Qt (slicer-core, pytest, ``Slicer --python-script``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import slicer
from slicer.util import VTKObservationMixin

from ..core.paths import MODULE_DIR
from .i18n import tr as _
from .process import EngineProcess
from .segment_helpers import engine_environment

POLL_MS = 100


class EngineRunLogic(VTKObservationMixin):
    """Base of the segmentation and comparison logics.

    Subclasses build a job (``{"command": [...], "workDir": Path, ...}``) and implement ``_readEngine``
    (progress lines) and ``_finish`` (results or error; it starts with ``_endRun``).
    """

    def __init__(self) -> None:
        VTKObservationMixin.__init__(self)
        self._engine: EngineProcess | None = None
        self._timer = None
        self._cancelled = False
        self._job: dict[str, Any] = {}

    def isRunning(self) -> bool:
        return self._engine is not None

    def _launch(self, job: dict[str, Any]) -> None:
        """Start the job's command; from now on a scene close cancels it.

        Raises:
            RuntimeError: the program could not be started (the job's folder is removed, nothing runs).
        """
        engine = EngineProcess(job["command"], env=engine_environment(), cwd=MODULE_DIR)
        try:
            engine.start()
        except OSError as exc:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            raise RuntimeError(_("could not start {0}: {1}").format(job["command"][0], exc)) from exc
        self._cancelled = False
        self._job, self._engine = job, engine
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)

    def _endRun(self, inputs: list) -> tuple[int | None, str | None]:
        """Read the last lines and release the engine: (exit code, None), or (None, why no result is loaded).

        ``(None, None)`` means cancelled. The job's folder is removed when nothing will be loaded from it.
        """
        engine, job = self._engine, self._job
        self._readEngine()
        self._engine = None
        self.removeObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)
        if self._cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None, None
        if any(node is not None and node.GetScene() is not slicer.mrmlScene for node in inputs):
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None, _("an input left the scene during the run: the results were not loaded")
        return engine.returncode, None

    def _waitForResult(self):
        """Block until the started engine ends (reading its progress); the result, None when cancelled.

        Raises:
            RuntimeError: the run failed (the engine's message).
        """
        while self._engine.running and not self._cancelled:
            self._readEngine()
            time.sleep(0.05)
        self._engine.wait()
        result, error = self._finish()
        if error:
            raise RuntimeError(error)
        return result

    def _startPolling(self) -> None:
        """Poll the engine from Slicer's event loop (GUI runs)."""
        if self._timer is None:
            import qt

            self._timer = qt.QTimer()
            self._timer.setInterval(POLL_MS)
            self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        """Read new progress; when the engine has ended, finish and call ``finishedCallback(result, error)``."""
        if self._engine is None:
            if self._timer is not None:
                self._timer.stop()
            return
        self._readEngine()
        if self._engine.running:
            return
        if self._timer is not None:
            self._timer.stop()
        callback = self._job.get("finishedCallback")
        result, error = self._finish()
        if callback:
            callback(result, error)

    def _onSceneStartClose(self, caller=None, event=None) -> None:
        self.cancel()

    def shutdown(self) -> None:
        """The widget goes away (Slicer quits, the module reloads): kill the run, call nobody back."""
        if self._engine is None:
            return
        self._job["progressCallback"] = self._job["finishedCallback"] = None
        self.cancel()
        if self._timer is not None:
            self._timer.stop()
        self._finish()

    def cancel(self) -> None:
        """Kill the engine and every process it started; no node is created or changed for that run."""
        if self._engine is None:
            return
        self._cancelled = True
        self._engine.kill()

    def _readEngine(self) -> None:
        raise NotImplementedError

    def _finish(self) -> tuple[Any, str | None]:
        raise NotImplementedError


def new_work_dir(prefix: str) -> Path:
    """A fresh folder for one run's exported inputs and the engine's outputs, in Slicer's temporary folder."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=prefix, dir=slicer.app.temporaryPath))
