"""The training Logic of the LungTumorSegTraining module: engine commands run one after the other, followed live.

Each command (``python -m LungTumorSegTrainingLib train|resume|export|ensemble ... --progress json``) runs as a
separate process (``LungTumorSegLib.slicer_glue.process``: Stop writes the run's stop file, which works on every OS;
Kill ends the launcher and the engine). Its JSON lines drive the log, the progress and a metrics table and plot;
the run folder is polled so a run started elsewhere can be followed. Qt is used only for the two timers, created
when Qt is there; without it (slicer-core, ``Slicer --python-script``) ``waitForFinished`` reads the output.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import slicer

from . import run_monitor as monitor
from . import train_commands as commands

TRAINING_MODULE_DIR = Path(__file__).resolve().parents[2]  # LungTumorSegTraining/
POLL_MS = 2000
OUTPUT_POLL_MS = 100
STOP_WAIT_MS = 120000  # scripts' waitForFinished default; the GUI never blocks on a stop


def qt_timer(intervalMs: int, callback):
    """A Qt timer calling ``callback`` (not started) inside Slicer; None where Qt is absent."""
    try:
        import qt
    except ImportError:
        return None
    timer = qt.QTimer()
    timer.setInterval(intervalMs)
    timer.connect("timeout()", callback)
    return timer


def _run(timer, action: str) -> None:
    """Start or stop a timer of ``qt_timer`` (nothing without Qt)."""
    if timer is not None:
        getattr(timer, action)()


class TrainingLogic:
    """Runs engine commands (one after the other) in separate processes, parses their JSON lines, follows run folders.

    Callbacks (plain attributes, set by the widget or a script): ``onLog(text)``, ``onProgress(fraction, message)``,
    ``onMetrics(history)``, ``onOverlay(path)``, ``onFinished(exitCode, ok)``, ``onRunState(runInfo)`` (each poll of
    the followed run folder).
    """

    def __init__(self) -> None:
        self.process = None
        self.queue: list[list[str]] = []
        self.queueRunDirs: list[Path] = []
        self.history = monitor.MetricsHistory()
        self.runDir: Path | None = None
        self.startTime = 0.0
        self.stepStartTime = 0.0
        self.stepsTotal = 1
        self.stepsDone = 0
        self.fraction = 0.0
        self.lastExitCode: int | None = None
        self.stopRequested = False
        self.overlayMtime = 0.0
        self.tableNode = None
        self.chartNode = None
        self.onLog = None
        self.onProgress = None
        self.onMetrics = None
        self.onOverlay = None
        self.onFinished = None
        self.onRunState = None
        self.pollTimer = qt_timer(POLL_MS, self.poll)
        self.outputTimer = qt_timer(OUTPUT_POLL_MS, self._readOutput)

    # ---------------------------------------------------------------- environment

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer inside Slicer (same packages as Slicer's Python), else this interpreter."""
        from LungTumorSegLib.slicer_glue.process import python_executable

        return python_executable()

    @staticmethod
    def engineEnvironment() -> dict[str, str]:
        """Environment for the engine process: unbuffered output and both Lib folders on PYTHONPATH."""
        env = dict(os.environ)
        paths = [str(TRAINING_MODULE_DIR)]
        try:
            import LungTumorSegLib

            paths.append(str(Path(LungTumorSegLib.__file__).resolve().parent.parent))
        except ImportError:
            paths.append(str(TRAINING_MODULE_DIR.parent / "LungTumorSeg"))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def ensureDependencies(askConfirmation: bool = True) -> bool:
        """The engine's packages (one list for both modules), installed by LungTumorSeg after the user agrees."""
        from LungTumorSegLib.slicer_glue.dependency_install import ensureEngineDependencies

        return ensureEngineDependencies(askConfirmation=askConfirmation, requester="LungTumorSeg Training")

    # ---------------------------------------------------------------- process control

    def isRunning(self) -> bool:
        """True while a command of the queue runs."""
        return self.process is not None and self.process.running

    def start(self, commands: list[list[str]], runDirs: list[Path] | None = None) -> None:
        """Run ``commands`` one after the other (follow ``runDirs[i]`` while command i runs)."""
        if self.isRunning():
            raise RuntimeError("a training process is already running")
        self.queue = [list(c) for c in commands]
        self.queueRunDirs = list(runDirs or [])
        self.stepsTotal, self.stepsDone = max(1, len(self.queue)), 0
        self.startTime = time.time()
        self.stopRequested = False
        self.lastExitCode = None
        self._startNext()

    def _startNext(self) -> None:
        from LungTumorSegLib.slicer_glue.process import EngineProcess

        command = self.queue.pop(0)
        runDir = self.queueRunDirs.pop(0) if self.queueRunDirs else None
        if runDir is not None:
            self.follow(runDir, reset=True)
        self.stepStartTime = time.time()
        stopFile = commands.stop_file_of(command)
        if stopFile is not None and stopFile.exists():
            stopFile.unlink()  # left by an earlier Stop that the engine never saw
        self.process = EngineProcess(command, env=self.engineEnvironment(), stop_file=stopFile)
        self._log("$ " + commands.quote_command(command))
        try:
            self.process.start()
        except OSError as exc:
            self._processError(exc)
            return
        _run(self.outputTimer, "start")

    def followedRun(self) -> monitor.RunInfo | None:
        """The followed run folder's state when it runs in another process (a run reconnected to), else None."""
        if self.isRunning() or self.runDir is None:
            return None
        info = monitor.read_run(self.runDir)
        return info if info.state == "running" else None

    def canStop(self) -> bool:
        """True while there is something Stop acts on: this logic's process, or a followed running run."""
        return self.isRunning() or self.followedRun() is not None

    def stop(self) -> bool:
        """Ask the engine to stop cleanly (its stop file: it checkpoints after the current step); the queue is dropped.

        Works for this logic's process and for a followed run started elsewhere (an earlier Slicer session, a
        shell): its run folder's stop file is written, and a process on this computer also gets SIGTERM (POSIX),
        which the trainer takes as the same clean stop. Commands without a stop file (export, ensemble) are killed:
        they have nothing to checkpoint. Returns True when a stop was requested.
        """
        self.queue, self.stopRequested = [], True
        if self.isRunning():
            if self.process.request_stop():
                self._log("Stopping: the engine writes a checkpoint and exits (Resume continues the run).")
            else:
                self.kill()
            return True
        followed = self.followedRun()
        if followed is None:
            return False
        stopFile = commands.stop_file(followed.path)
        stopFile.write_text(f"stop requested by process {os.getpid()} at {time.ctime()}\n", encoding="utf-8")
        if followed.pid and os.name != "nt" and monitor.pid_alive(followed.pid):
            os.kill(followed.pid, signal.SIGTERM)
        self._log(f"Stopping {followed.name}: the engine writes a checkpoint and exits (Resume continues the run).")
        _run(self.pollTimer, "start")
        return True

    def kill(self) -> None:
        """Kill the process and everything it started at once (no checkpoint beyond the last one)."""
        self.queue = []
        if self.process is not None:
            self.process.kill()

    def shutdown(self) -> None:
        """The widget goes away (Slicer quits, the module reloads): no dialog, no waiting, nobody called back.

        A running training is asked to stop cleanly through its stop file and finishes that on its own (it
        checkpoints after the current step; Resume continues it); a command without a stop file is killed.
        """
        self.onLog = self.onProgress = self.onMetrics = self.onOverlay = self.onFinished = self.onRunState = None
        self.queue = []
        if self.isRunning() and not self.process.request_stop():
            self.process.kill()
        self.process = None
        _run(self.outputTimer, "stop")
        _run(self.pollTimer, "stop")

    def waitForFinished(self, timeoutMs: int = STOP_WAIT_MS) -> bool:
        """Block until the queue ended (processing events); True if it did."""
        deadline = time.time() + timeoutMs / 1000.0
        while (self.process is not None or self.queue) and time.time() < deadline:
            if self.outputTimer is None:  # no Qt event loop (slicer-core, scripts): read the output here
                self._readOutput()
            else:
                slicer.app.processEvents()
            time.sleep(0.05)
        return not (self.process is not None or self.queue)

    def _readOutput(self) -> None:
        """Timer: new output lines; the end of the process."""
        if self.process is None:
            _run(self.outputTimer, "stop")
            return
        for line in self.process.read_lines():
            self.handleLine(line)
        if not self.process.running:
            _run(self.outputTimer, "stop")
            self._processFinished(self.process.returncode)

    def _processError(self, error: Exception) -> None:
        """The program could not be started."""
        self._log(f"ERROR: could not start the process: {error}")
        self.process, self.queue = None, []
        _run(self.pollTimer, "stop")
        self.lastExitCode = -1
        if self.onFinished:
            self.onFinished(-1, False)

    def _processFinished(self, exitCode=0) -> None:
        self.process = None
        self.lastExitCode = int(exitCode if exitCode is not None else -1)
        self.stepsDone += 1
        self.poll()
        ok = self.lastExitCode == 0 and not self.stopRequested
        self._log(f"Process ended with exit code {self.lastExitCode}.")
        if ok and self.queue:
            self._startNext()
            return
        _run(self.pollTimer, "stop")
        if self.onFinished:
            self.onFinished(self.lastExitCode, ok)

    # ---------------------------------------------------------------- parsing and following

    def handleLine(self, line: str) -> None:
        """One stdout line of the engine: update the log, progress and metrics."""
        event = monitor.parse_line(line)
        if event is None:
            return
        kind = event.get("event")
        if kind == "progress":
            stepFraction = monitor.progress_fraction(event) or 0.0
            self.fraction = (self.stepsDone + stepFraction) / self.stepsTotal
            elapsed = time.time() - self.startTime
            eta = monitor.format_duration(monitor.eta_seconds(elapsed, self.fraction))
            message = f"{event.get('step', '')} {event.get('message', '')}".strip()
            if self.onProgress:
                self.onProgress(self.fraction, f"{message} — elapsed {monitor.format_duration(elapsed)}, ETA {eta}")
        elif kind == "metrics":
            if self.history.add(event):
                self.updatePlot()
            self._log(
                f"epoch {event.get('epoch')}: loss {event.get('train_loss')}, val Dice {event.get('val_dice')}, "
                f"best {event.get('best_dice')}"
            )
        elif kind == "log":
            self._log(f"{event.get('level', 'info')}: {event.get('message', '')}")
        elif kind == "checkpoint":
            self._log(f"checkpoint written: {event.get('path')}")
            self.checkOverlay()
        elif kind == "result":
            self._log(f"result: {event.get('outputs', event.get('summary', ''))}")
        elif kind == "error":
            self._log(f"ERROR: {event.get('message', '')}")
        else:
            self._log(event.get("message", line))

    def follow(self, runDir: Path | str, reset: bool = True) -> None:
        """Show this run folder's metrics.csv, status and overlay, polling every few seconds."""
        self.runDir = Path(runDir)
        if reset:
            self.history = monitor.MetricsHistory()
            self.overlayMtime = 0.0
        self.poll()
        _run(self.pollTimer, "start")

    def poll(self) -> monitor.RunInfo | None:
        """Read the followed run folder (metrics.csv, status.json, val_overlay.png)."""
        if self.runDir is None:
            return None
        if self.history.load_csv(self.runDir / "metrics.csv"):
            self.updatePlot()
        self.checkOverlay()
        info = monitor.read_run(self.runDir)
        if not self.isRunning() and info.state != "running":
            _run(self.pollTimer, "stop")
        if self.onRunState:
            self.onRunState(info)
        return info

    def checkOverlay(self) -> None:
        """Report val_overlay.png when it was (re)written."""
        if self.runDir is None:
            return
        path = self.runDir / "val_overlay.png"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime != self.overlayMtime:
            self.overlayMtime = mtime
            if self.onOverlay:
                self.onOverlay(str(path))

    def _log(self, text: str) -> None:
        logging.debug(text)
        if self.onLog:
            self.onLog(text)

    # ---------------------------------------------------------------- plot

    def updatePlot(self) -> None:
        """Copy the metrics history into a table node and show loss and validation Dice in a plot chart."""
        import numpy as np

        columns = self.history.table()
        if not columns["epoch"]:
            return
        if self.tableNode is None or self.tableNode.GetScene() is None:
            self.tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "TrainingMetrics")
        names = ["epoch", "train_loss", "val_dice"]
        slicer.util.updateTableFromArray(self.tableNode, [np.asarray(columns[n], dtype=float) for n in names], names)
        if self.chartNode is None or self.chartNode.GetScene() is None:
            self.chartNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", "TrainingCurves")
            self.chartNode.SetTitle("Training loss and validation Dice")
            self.chartNode.SetXAxisTitle("epoch")
            self.chartNode.SetYAxisTitle("loss / Dice")
            for column, color in (("train_loss", (0.85, 0.3, 0.2)), ("val_dice", (0.2, 0.55, 0.9))):
                series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
                series.SetAndObserveTableNodeID(self.tableNode.GetID())
                series.SetXColumnName("epoch")
                series.SetYColumnName(column)
                series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
                series.SetColor(*color)
                self.chartNode.AddAndObservePlotSeriesNodeID(series.GetID())
            if hasattr(slicer.app, "layoutManager") and slicer.app.layoutManager() is not None:
                slicer.modules.plots.logic().ShowChartInLayout(self.chartNode)
        if self.onMetrics:
            self.onMetrics(self.history)

    # ---------------------------------------------------------------- installing

    @staticmethod
    def modelsDir() -> Path:
        """LungTumorSeg's user models folder (bundles there are listed by the inference module); torch-free."""
        from LungTumorSegLib.model.model_names import user_models_dir

        return user_models_dir()

    def installCommands(self, runDirs: list[Path], name: str, overwrite: bool = False) -> list[list[str]]:
        """``export`` (one run) or ``ensemble`` + ``export`` (several runs, weights searched) into the models folder."""
        return commands.install_commands(runDirs, self.modelsDir(), name, self.pythonExecutable(), overwrite)

    @staticmethod
    def refreshInferenceModule() -> bool:
        """Ask a loaded LungTumorSeg widget to re-list its models; True if one was refreshed."""
        try:
            widget = slicer.util.getModuleWidget("LungTumorSeg")
        except Exception:  # noqa: BLE001 - module not installed or widget not created yet
            return False
        for name in ("refreshModels", "refreshModelList", "updateModelList", "populateModels", "onRefreshModels"):
            method = getattr(widget, name, None)
            if callable(method):
                method()
                return True
        return False
