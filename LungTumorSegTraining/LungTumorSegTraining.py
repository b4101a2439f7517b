"""LungTumorSegTraining: train, follow, stop/resume and install lung tumour segmentation models in 3D Slicer.

A thin GUI over the training engine's command line (``python -m LungTumorSegTrainingLib train|resume|export|
ensemble ... --progress json``), run as a separate process (LungTumorSegLib.process: Stop writes the run's stop
file, which works on every OS; Kill ends the launcher and the engine). See docs/training-module.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import qt
import slicer
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LungTumorSegTrainingLib import gui_helpers as gh  # noqa: E402

POLL_MS = 2000
OUTPUT_POLL_MS = 100
STOP_WAIT_MS = 120000


#
# LungTumorSegTraining
#


class LungTumorSegTraining(ScriptedLoadableModule):
    """Module description for Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungTumorSeg Training"
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["LungTumorSeg"]  # its engine (LungTumorSegLib) and dependency installer
        self.parent.contributors = ["LungTumorSeg developers"]
        self.parent.helpText = (
            "Train U-Net / SwinUNETR lung tumour segmentation models (MSD Task06 or image/label folders) "
            "with live loss and Dice plots, stop/resume, and install the result so LungTumorSeg lists it. "
            "See docs/training-module.md."
        )
        self.parent.acknowledgementText = "Built on MONAI and PyTorch. Research use only."


#
# Logic
#


class LungTumorSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Runs engine commands (one after the other) in separate processes, parses their JSON lines, follows run folders.

    Callbacks (plain attributes, set by the widget or a script): ``onLog(text)``, ``onProgress(fraction, message)``,
    ``onMetrics(history)``, ``onOverlay(path)``, ``onFinished(exitCode, ok)``.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.process = None
        self.queue: list[list[str]] = []
        self.queueRunDirs: list[Path] = []
        self.history = gh.MetricsHistory()
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
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_MS)
        self.pollTimer.connect("timeout()", self.poll)
        self.outputTimer = qt.QTimer()
        self.outputTimer.setInterval(OUTPUT_POLL_MS)
        self.outputTimer.connect("timeout()", self._readOutput)

    # ---------------------------------------------------------------- environment

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer inside Slicer (same packages as Slicer's Python), else this interpreter."""
        from LungTumorSegLib.process import python_executable

        return python_executable()

    @staticmethod
    def engineEnvironment() -> dict[str, str]:
        """Environment for the engine process: unbuffered output and both Lib folders on PYTHONPATH."""
        env = dict(os.environ)
        paths = [str(MODULE_DIR)]
        try:
            import LungTumorSegLib

            paths.append(str(Path(LungTumorSegLib.__file__).resolve().parent.parent))
        except ImportError:
            paths.append(str(MODULE_DIR.parent / "LungTumorSeg"))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def ensureDependencies(askConfirmation: bool = True) -> bool:
        """The engine's packages (one list for both modules), installed by LungTumorSeg after the user agrees."""
        from LungTumorSeg import ensureEngineDependencies

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
        from LungTumorSegLib.process import EngineProcess

        command = self.queue.pop(0)
        runDir = self.queueRunDirs.pop(0) if self.queueRunDirs else None
        if runDir is not None:
            self.follow(runDir, reset=True)
        self.stepStartTime = time.time()
        stopFile = gh.stop_file_of(command)
        if stopFile is not None and stopFile.exists():
            stopFile.unlink()  # left by an earlier Stop that the engine never saw
        self.process = EngineProcess(command, env=self.engineEnvironment(), stop_file=stopFile)
        self._log("$ " + gh.quote_command(command))
        try:
            self.process.start()
        except OSError as exc:
            self._processError(exc)
            return
        self.outputTimer.start()

    def stop(self) -> None:
        """Ask the engine to stop cleanly (its stop file: it checkpoints after the current step); the queue is dropped.

        Commands without a stop file (export, ensemble) are killed: they have nothing to checkpoint.
        """
        self.queue, self.stopRequested = [], True
        if not self.isRunning():
            return
        if self.process.request_stop():
            self._log("Stopping: the engine writes a checkpoint and exits (Resume continues the run).")
        else:
            self.kill()

    def kill(self) -> None:
        """Kill the process and everything it started at once (no checkpoint beyond the last one)."""
        self.queue = []
        if self.process is not None:
            self.process.kill()

    def shutdown(self) -> None:
        """The widget goes away: kill what still runs, stop the timers, call nobody back."""
        self.onLog = self.onProgress = self.onMetrics = self.onOverlay = self.onFinished = None
        self.kill()
        self.process = None
        self.outputTimer.stop()
        self.pollTimer.stop()

    def waitForFinished(self, timeoutMs: int = STOP_WAIT_MS) -> bool:
        """Block until the queue ended (processing events); True if it did."""
        deadline = time.time() + timeoutMs / 1000.0
        while (self.process is not None or self.queue) and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        return not (self.process is not None or self.queue)

    def _readOutput(self) -> None:
        """Timer: new output lines; the end of the process."""
        if self.process is None:
            self.outputTimer.stop()
            return
        for line in self.process.read_lines():
            self.handleLine(line)
        if not self.process.running:
            self.outputTimer.stop()
            self._processFinished(self.process.returncode)

    def _processError(self, error: Exception) -> None:
        """The program could not be started."""
        self._log(f"ERROR: could not start the process: {error}")
        self.process, self.queue = None, []
        self.pollTimer.stop()
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
        self.pollTimer.stop()
        if self.onFinished:
            self.onFinished(self.lastExitCode, ok)

    # ---------------------------------------------------------------- parsing and following

    def handleLine(self, line: str) -> None:
        """One stdout line of the engine: update the log, progress and metrics."""
        event = gh.parse_line(line)
        if event is None:
            return
        kind = event.get("event")
        if kind == "progress":
            stepFraction = gh.progress_fraction(event) or 0.0
            self.fraction = (self.stepsDone + stepFraction) / self.stepsTotal
            elapsed = time.time() - self.startTime
            eta = gh.format_duration(gh.eta_seconds(elapsed, self.fraction))
            message = f"{event.get('step', '')} {event.get('message', '')}".strip()
            if self.onProgress:
                self.onProgress(self.fraction, f"{message} — elapsed {gh.format_duration(elapsed)}, ETA {eta}")
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
            self.history = gh.MetricsHistory()
            self.overlayMtime = 0.0
        self.poll()
        self.pollTimer.start()

    def poll(self) -> gh.RunInfo | None:
        """Read the followed run folder (metrics.csv, status.json, val_overlay.png)."""
        if self.runDir is None:
            return None
        if self.history.load_csv(self.runDir / "metrics.csv"):
            self.updatePlot()
        self.checkOverlay()
        info = gh.read_run(self.runDir)
        if not self.isRunning() and info.state != "running":
            self.pollTimer.stop()
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
            if slicer.app.layoutManager() is not None:
                slicer.modules.plots.logic().ShowChartInLayout(self.chartNode)
        if self.onMetrics:
            self.onMetrics(self.history)

    # ---------------------------------------------------------------- installing

    @staticmethod
    def modelsDir() -> Path:
        """LungTumorSeg's user models folder (bundles there are listed by the inference module); torch-free."""
        from LungTumorSegLib.model_names import user_models_dir

        return user_models_dir()

    def installCommands(self, runDirs: list[Path], name: str, overwrite: bool = False) -> list[list[str]]:
        """``export`` (one run) or ``ensemble`` + ``export`` (several runs, weights searched) into the models folder."""
        return gh.install_commands(runDirs, self.modelsDir(), name, self.pythonExecutable(), overwrite)

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


#
# Widget
#


class LungTumorSegTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: dataset, run settings, training, runs list, install."""

    RUN_COLUMNS = ["Run", "State", "Epoch", "Best Dice", "Arch"]

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.runs: list[gh.RunInfo] = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungTumorSegTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LungTumorSegTrainingLogic()
        self.logic.onLog = self.appendLog
        self.logic.onProgress = self.showProgress
        self.logic.onOverlay = self.showOverlay
        self.logic.onFinished = self.processFinished

        settings = qt.QSettings()
        self.ui.outputPathLineEdit.currentPath = settings.value(
            "LungTumorSegTraining/outputDir", str(Path.home() / "LungTumorSegRuns")
        )
        self.ui.datasetPathLineEdit.currentPath = settings.value("LungTumorSegTraining/dataset", "")
        self.ui.runsTableWidget.setColumnCount(len(self.RUN_COLUMNS))
        self.ui.runsTableWidget.setHorizontalHeaderLabels(self.RUN_COLUMNS)
        self.ui.runsTableWidget.setSelectionMode(qt.QAbstractItemView.ExtendedSelection)
        self.ui.installHintLabel.text = (
            f"Models are installed into {self.logic.modelsDir()}. " + self.ui.installHintLabel.text
        )

        self.ui.validateButton.connect("clicked(bool)", self.onValidate)
        self.ui.applyPresetButton.connect("clicked(bool)", self.onApplyPreset)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.refreshRunsButton.connect("clicked(bool)", self.refreshRuns)
        self.ui.openLogButton.connect("clicked(bool)", self.onOpenLog)
        self.ui.openFolderButton.connect("clicked(bool)", self.onOpenFolder)
        self.ui.connectRunButton.connect("clicked(bool)", self.onFollowRun)
        self.ui.installButton.connect("clicked(bool)", self.onInstall)
        self.ui.outputPathLineEdit.connect("currentPathChanged(QString)", lambda _path: self.refreshRuns())
        self.ui.architectureComboBox.connect("currentIndexChanged(int)", lambda _index: self.updateButtons())
        self.refreshRuns()
        self.reconnectRunning()
        self.updateButtons()

    def cleanup(self):
        """Slicer quits or the module reloads: never leave a training process behind silently."""
        if self.logic is not None and self.logic.isRunning():
            stop = slicer.util.confirmYesNoDisplay(
                "A training run is still in progress.\n\nYes: stop it cleanly now (a checkpoint is written; "
                "Resume continues it later).\nNo: kill it immediately (the last epoch's checkpoint is kept).",
                windowTitle="LungTumorSeg Training",
            )
            if stop:
                self.logic.stop()
                if not self.logic.waitForFinished(STOP_WAIT_MS):
                    self.logic.kill()
            else:
                self.logic.kill()
        if self.logic is not None:
            self.logic.shutdown()
        self.removeObservers()

    # ---------------------------------------------------------------- settings

    def dataPaths(self) -> list[str]:
        """``--data``: the dataset folder, plus the label folder when images and labels are separate folders."""
        paths = [self.ui.datasetPathLineEdit.currentPath.strip()]
        labels = self.ui.labelsPathLineEdit.currentPath.strip()
        if labels:
            paths.append(labels)
        return [p for p in paths if p]

    def settingsFromGui(self) -> gh.TrainSettings:
        """The run settings as the widgets show them."""
        archIndex = self.ui.architectureComboBox.currentIndex
        archs = [["UNet"], ["SwinUNETR"], ["UNet", "SwinUNETR"]][max(0, archIndex)]
        try:
            patch = [int(v) for v in self.ui.patchSizeLineEdit.text.replace(",", " ").split()]
        except ValueError:
            patch = []
        return gh.TrainSettings(
            data=self.dataPaths(),
            output_dir=self.ui.outputPathLineEdit.currentPath.strip(),
            run_name=self.ui.runNameLineEdit.text.strip(),
            archs=archs,
            patch_size=patch,
            batch_size=self.ui.batchSizeSpinBox.value,
            epochs=self.ui.epochsSpinBox.value,
            lr=self.ui.learningRateSpinBox.value,
            loss=gh.LOSSES[self.ui.lossComboBox.currentText],
            fold=self.ui.foldSpinBox.value,
            device=self.ui.deviceComboBox.currentText,
            gpus=self.ui.gpusSpinBox.value,
            steps_per_epoch=self.ui.stepsPerEpochSpinBox.value,
            max_cases=self.ui.maxCasesSpinBox.value,
            val_every=self.ui.valEverySpinBox.value,
            cache="none" if self.ui.presetComboBox.currentText == "Quick CPU check" else "memory",
        )

    def settingsToGui(self, s: gh.TrainSettings) -> None:
        """Show ``s`` in the widgets."""
        index = 2 if len(s.archs) > 1 else (1 if s.archs == ["SwinUNETR"] else 0)
        self.ui.architectureComboBox.currentIndex = index
        self.ui.patchSizeLineEdit.text = " ".join(str(v) for v in s.patch_size)
        self.ui.batchSizeSpinBox.value = s.batch_size
        self.ui.epochsSpinBox.value = s.epochs
        self.ui.learningRateSpinBox.value = s.lr
        self.ui.lossComboBox.currentText = {v: k for k, v in gh.LOSSES.items()}[s.loss]
        self.ui.foldSpinBox.value = s.fold
        self.ui.deviceComboBox.currentText = s.device
        self.ui.gpusSpinBox.value = s.gpus
        self.ui.stepsPerEpochSpinBox.value = s.steps_per_epoch
        self.ui.maxCasesSpinBox.value = s.max_cases
        self.ui.valEverySpinBox.value = s.val_every

    def onApplyPreset(self, _checked=False) -> None:
        name = self.ui.presetComboBox.currentText
        if name in gh.PRESETS:
            self.settingsToGui(gh.apply_preset(self.settingsFromGui(), name))

    def onValidate(self, _checked=False) -> gh.DatasetSummary | None:
        if not self.logic.ensureDependencies():
            self.ui.datasetSummaryLabel.text = "The Python packages are missing: see docs/slicer-module.md."
            return None
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            summary = gh.validate_dataset(self.dataPaths())
        finally:
            qt.QApplication.restoreOverrideCursor()
        self.ui.datasetSummaryLabel.text = summary.text()
        self.ui.datasetSummaryLabel.setStyleSheet("" if summary.ok else "color: #c0392b")
        qt.QSettings().setValue("LungTumorSegTraining/dataset", self.ui.datasetPathLineEdit.currentPath)
        return summary

    # ---------------------------------------------------------------- running

    def updateButtons(self) -> None:
        running = self.logic is not None and self.logic.isRunning()
        self.ui.startButton.enabled = not running
        self.ui.resumeButton.enabled = not running
        self.ui.installButton.enabled = not running
        self.ui.stopButton.enabled = running

    def onStart(self, _checked=False) -> None:
        settings = self.settingsFromGui()
        problems = settings.problems()
        summary = self.onValidate()
        if summary is None:
            return
        if not summary.ok:
            problems.append("The dataset check failed (see the Dataset section).")
        existing = [d for d in settings.run_dirs() if gh.is_run_dir(d)]
        if existing:
            problems.append(f"{existing[0]} already holds a run: choose another run name, or Resume it.")
        if problems:
            slicer.util.errorDisplay("\n".join(problems), windowTitle="Cannot start training")
            return
        qt.QSettings().setValue("LungTumorSegTraining/outputDir", settings.output_dir)
        self.ui.logTextEdit.clear()
        commands = gh.training_commands(settings, self.logic.pythonExecutable())
        self.logic.start(commands, settings.run_dirs())
        self.ui.statusLabel.text = f"Training {', '.join(settings.archs)} into {settings.output_dir}"
        self.updateButtons()

    def onStop(self, _checked=False) -> None:
        if self.logic.stopRequested and self.logic.isRunning():
            if slicer.util.confirmYesNoDisplay("The process has not stopped yet. Kill it now?"):
                self.logic.kill()
            return
        self.logic.stop()
        self.ui.statusLabel.text = "Stopping (writing a checkpoint)..."

    def selectedRuns(self) -> list[gh.RunInfo]:
        rows = sorted({index.row() for index in self.ui.runsTableWidget.selectedIndexes()})
        return [self.runs[r] for r in rows if r < len(self.runs)]

    def onResume(self, _checked=False) -> None:
        candidates = [r for r in (self.selectedRuns() or self.runs) if r.resumable]
        if not candidates:
            slicer.util.errorDisplay("No stopped or crashed run with a checkpoint (checkpoints/last.pt) is selected.")
            return
        run = candidates[0]
        if not self.logic.ensureDependencies():
            return
        self.ui.logTextEdit.clear()
        command = gh.resume_command(run.path, self.logic.pythonExecutable(), self.ui.gpusSpinBox.value)
        self.logic.start([command], [run.path])
        self.ui.statusLabel.text = f"Resuming {run.name}"
        self.updateButtons()

    def reconnectRunning(self) -> None:
        """Follow a run that is still running (e.g. started before Slicer was restarted) through its files."""
        running = [r for r in self.runs if r.state == "running"]
        if running and not self.logic.isRunning():
            self.logic.follow(running[0].path)
            self.ui.statusLabel.text = (
                f"{running[0].name} is running in another process (pid {running[0].pid}): following its files."
            )

    def onFollowRun(self, _checked=False) -> None:
        runs = self.selectedRuns()
        if runs:
            self.logic.follow(runs[0].path)
            self.ui.statusLabel.text = f"Following {runs[0].name}: {runs[0].summary()}"

    def appendLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def showProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    def showOverlay(self, path: str) -> None:
        pixmap = qt.QPixmap(path)
        if not pixmap.isNull():
            width = max(200, self.ui.overlayLabel.width)
            self.ui.overlayLabel.setPixmap(pixmap.scaledToWidth(width, qt.Qt.SmoothTransformation))

    def processFinished(self, exitCode: int, ok: bool) -> None:
        self.updateButtons()
        if ok:
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = "Finished."
        elif self.logic.stopRequested:
            self.ui.statusLabel.text = "Stopped: Resume continues from the last checkpoint."
        else:
            self.ui.statusLabel.text = f"Failed (exit code {exitCode}): see the log."
        self.refreshRuns()

    # ---------------------------------------------------------------- runs list and install

    def refreshRuns(self, _checked=False) -> None:
        self.runs = (
            gh.discover_runs(self.ui.outputPathLineEdit.currentPath.strip())
            if self.ui.outputPathLineEdit.currentPath
            else []
        )
        table = self.ui.runsTableWidget
        table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            epoch = "" if run.epoch is None else (f"{run.epoch}/{run.epochs}" if run.epochs else str(run.epoch))
            dice = "" if run.best_dice is None else f"{run.best_dice:.3f}"
            for column, text in enumerate([run.name, run.state, epoch, dice, run.arch]):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(str(run.path))
                table.setItem(row, column, item)
        table.resizeColumnsToContents()

    def onOpenLog(self, _checked=False) -> None:
        for run in self.selectedRuns()[:1]:
            if run.log is None:
                slicer.util.infoDisplay(f"{run.name} has no log file yet.")
                return
            text = run.log.read_text(encoding="utf-8", errors="replace")
            self.ui.logTextEdit.setPlainText(text[-200000:])

    def onOpenFolder(self, _checked=False) -> None:
        for run in self.selectedRuns()[:1]:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(run.path)))

    def onInstall(self, _checked=False) -> None:
        runs = [r for r in self.selectedRuns() if r.installable]
        if not runs:
            slicer.util.errorDisplay("Select one or more runs with a checkpoint in the runs list.")
            return
        if not self.logic.ensureDependencies():
            return
        name = self.ui.modelNameLineEdit.text.strip()
        overwrite = False
        if (self.logic.modelsDir() / name).exists():
            if not slicer.util.confirmYesNoDisplay(f"A model named {name} is already installed. Replace it?"):
                return
            overwrite = True
        try:
            commands = self.logic.installCommands([r.path for r in runs], name, overwrite)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.logic.onFinished = self.installFinished
        self.logic.start(commands)
        self.ui.statusLabel.text = f"Installing {name} from {', '.join(r.name for r in runs)}..."
        self.updateButtons()

    def installFinished(self, exitCode: int, ok: bool) -> None:
        self.logic.onFinished = self.processFinished
        self.updateButtons()
        if ok:
            refreshed = self.logic.refreshInferenceModule()
            self.ui.statusLabel.text = "Model installed" + (" and LungTumorSeg refreshed." if refreshed else ".")
        else:
            self.ui.statusLabel.text = f"Install failed (exit code {exitCode}): see the log."


#
# Test
#


class LungTumorSegTrainingTest(ScriptedLoadableModuleTest):
    """Short CPU checks (well under a minute): dependencies first, then train a few steps, Stop (the stop file)
    with a checkpoint, Resume to the end, plot, and install the model so LungTumorSeg lists it."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DependenciesInstalled()
        self.setUp()
        self.test_QuickTrainingStopResumeAndInstall()

    @staticmethod
    def tinyPairs() -> list[tuple[Path, Path]]:
        """Three LIDC crops (different patients) from the shared data, else the module's demo nodule twice."""
        shared = MODULE_DIR.parent.parent / "shared" / "data" / "lidc-nodule-crops"
        if (shared / "image").is_dir():
            pairs, patients = [], set()
            for image in sorted((shared / "image").glob("*.nii.gz")):
                patient = image.name.split("_")[0]
                label = shared / "mask" / image.name
                if patient not in patients and label.is_file():
                    pairs.append((image, label))
                    patients.add(patient)
                if len(pairs) == 3:
                    return pairs
        # source tree: ../LungTumorSeg/Resources/Sample; installed extension: both modules share Resources/
        candidates = [MODULE_DIR.parent / "LungTumorSeg" / "Resources" / "Sample", MODULE_DIR / "Resources" / "Sample"]
        sample = next((c for c in candidates if (c / "demo_nodule.nii.gz").is_file()), candidates[0])
        return [(sample / "demo_nodule.nii.gz", sample / "demo_nodule_mask.nii.gz")] * 2

    def test_DependenciesInstalled(self):
        self.delayDisplay("Checking the Python packages (installing the missing ones)")
        self.assertTrue(
            LungTumorSegTrainingLogic.ensureDependencies(askConfirmation=False),
            "the training engine's Python packages are missing and could not be installed (see the log)",
        )

    def test_QuickTrainingStopResumeAndInstall(self):
        import tempfile

        from LungTumorSegLib.model_names import list_bundles

        self.delayDisplay("Quick CPU training: stop, resume, install")
        started = time.time()
        work = Path(tempfile.mkdtemp(prefix="LungTumorSegTrainingTest-"))
        dataset = gh.build_tiny_msd(work / "tiny", self.tinyPairs())
        summary = gh.validate_dataset([str(dataset)])
        self.assertTrue(summary.ok, summary.text())
        settings = gh.apply_preset(
            gh.TrainSettings(data=[str(dataset)], output_dir=str(work / "runs")), "Quick CPU check"
        )
        settings.run_name, settings.patch_size, settings.epochs, settings.steps_per_epoch = "quick", [32, 32, 16], 2, 2
        runDir = settings.run_dirs()[0]

        logic = LungTumorSegTrainingLogic()
        finished, progress = [], []
        logic.onFinished = lambda code, ok: finished.append((code, ok))
        logic.onProgress = lambda fraction, message: progress.append(message)
        logic.start(gh.training_commands(settings, logic.pythonExecutable()), settings.run_dirs())
        while not progress and logic.isRunning():
            slicer.app.processEvents()
            time.sleep(0.05)
        logic.stop()  # the Stop button: the stop file, on every OS
        self.assertTrue(logic.waitForFinished(120000), "the run did not stop")
        run = gh.read_run(runDir)
        self.assertEqual(finished[-1][0], 0, "a requested stop exits cleanly")
        self.assertEqual(run.state, "stopped", run.summary())
        self.assertTrue(run.resumable, "a stopped run keeps checkpoints/last.pt")

        logic.start([gh.resume_command(runDir, logic.pythonExecutable())], [runDir])
        self.assertTrue(logic.waitForFinished(300000), "the resumed run did not finish")
        self.assertEqual(finished[-1], (0, True))
        run = gh.read_run(runDir)
        self.assertEqual(run.state, "finished")
        self.assertIsNotNone(logic.tableNode)
        self.assertGreaterEqual(logic.tableNode.GetNumberOfRows(), 1)
        self.assertEqual(logic.chartNode.GetNumberOfPlotSeriesNodes(), 2)

        previous = os.environ.get("LUNGTUMORSEG_MODELS")
        os.environ["LUNGTUMORSEG_MODELS"] = str(work / "models")
        try:
            name = "selftest-quick"
            logic.start(logic.installCommands([run.path], name, overwrite=True))
            self.assertTrue(logic.waitForFinished(300000), "install did not finish")
            self.assertEqual(finished[-1], (0, True))
            self.assertIn(name, list_bundles())
            logic.refreshInferenceModule()
        finally:
            if previous is None:
                os.environ.pop("LUNGTUMORSEG_MODELS", None)
            else:
                os.environ["LUNGTUMORSEG_MODELS"] = previous
        shutil.rmtree(work, ignore_errors=True)
        self.delayDisplay(f"Stopped, resumed and installed in {time.time() - started:.0f} s")
