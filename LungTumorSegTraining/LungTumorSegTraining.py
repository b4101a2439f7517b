"""LungTumorSegTraining: train, follow, stop/resume and install lung tumour segmentation models in 3D Slicer.

A thin GUI over the training engine's command line (``python -m LungTumorSegTrainingLib train|resume|export|
ensemble ... --progress json``), run as a separate process (LungTumorSegLib.slicer_glue.process: Stop writes the
run's stop file, which works on every OS; Kill ends the launcher and the engine). See docs/training-module.md.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import qt
import slicer
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LungTumorSegTrainingLib.slicer_glue import dataset_check as datasets  # noqa: E402
from LungTumorSegTrainingLib.slicer_glue import run_monitor as monitor  # noqa: E402
from LungTumorSegTrainingLib.slicer_glue import train_commands as commands  # noqa: E402
from LungTumorSegTrainingLib.slicer_glue.training_logic import TrainingLogic  # noqa: E402

SELF_TEST_DIR = MODULE_DIR / "Testing" / "Python"


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

    def runTest(self, msec=100, **kwargs):
        """Slicer's self-test entry (Reload and Test, ``slicer.selfTests``): the tests live in Testing/Python."""
        if str(SELF_TEST_DIR) not in sys.path:
            sys.path.insert(0, str(SELF_TEST_DIR))
        import LungTumorSegTrainingSelfTest

        testCase = importlib.reload(LungTumorSegTrainingSelfTest).LungTumorSegTrainingTest()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


#
# Logic
#


class LungTumorSegTrainingLogic(TrainingLogic, ScriptedLoadableModuleLogic):
    """The training Logic (LungTumorSegTrainingLib.slicer_glue.training_logic) as this module's Logic."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        TrainingLogic.__init__(self)


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
        self.runs: list[monitor.RunInfo] = []

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
        self.logic.onRunState = self.followedRunState

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
        """Slicer quits or the module reloads: no dialog (the main window may be gone), no waiting.

        A running training is asked to stop cleanly through its stop file and finishes that on its own, with a
        checkpoint (Resume continues it); export and ensemble commands are killed (TrainingLogic.shutdown).
        """
        if self.logic is not None:
            if self.logic.isRunning():
                logging.info("LungTumorSeg Training: Slicer closes; the running training stops with a checkpoint")
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

    def settingsFromGui(self) -> commands.TrainSettings:
        """The run settings as the widgets show them."""
        archIndex = self.ui.architectureComboBox.currentIndex
        archs = [["UNet"], ["SwinUNETR"], ["UNet", "SwinUNETR"]][max(0, archIndex)]
        try:
            patch = [int(v) for v in self.ui.patchSizeLineEdit.text.replace(",", " ").split()]
        except ValueError:
            patch = []
        return commands.TrainSettings(
            data=self.dataPaths(),
            output_dir=self.ui.outputPathLineEdit.currentPath.strip(),
            run_name=self.ui.runNameLineEdit.text.strip(),
            archs=archs,
            patch_size=patch,
            batch_size=self.ui.batchSizeSpinBox.value,
            epochs=self.ui.epochsSpinBox.value,
            lr=self.ui.learningRateSpinBox.value,
            loss=commands.LOSSES[self.ui.lossComboBox.currentText],
            fold=self.ui.foldSpinBox.value,
            device=self.ui.deviceComboBox.currentText,
            gpus=self.ui.gpusSpinBox.value,
            steps_per_epoch=self.ui.stepsPerEpochSpinBox.value,
            max_cases=self.ui.maxCasesSpinBox.value,
            val_every=self.ui.valEverySpinBox.value,
            cache="none" if self.ui.presetComboBox.currentText == "Quick CPU check" else "memory",
        )

    def settingsToGui(self, s: commands.TrainSettings) -> None:
        """Show ``s`` in the widgets."""
        index = 2 if len(s.archs) > 1 else (1 if s.archs == ["SwinUNETR"] else 0)
        self.ui.architectureComboBox.currentIndex = index
        self.ui.patchSizeLineEdit.text = " ".join(str(v) for v in s.patch_size)
        self.ui.batchSizeSpinBox.value = s.batch_size
        self.ui.epochsSpinBox.value = s.epochs
        self.ui.learningRateSpinBox.value = s.lr
        self.ui.lossComboBox.currentText = {v: k for k, v in commands.LOSSES.items()}[s.loss]
        self.ui.foldSpinBox.value = s.fold
        self.ui.deviceComboBox.currentText = s.device
        self.ui.gpusSpinBox.value = s.gpus
        self.ui.stepsPerEpochSpinBox.value = s.steps_per_epoch
        self.ui.maxCasesSpinBox.value = s.max_cases
        self.ui.valEverySpinBox.value = s.val_every

    def onApplyPreset(self, _checked=False) -> None:
        name = self.ui.presetComboBox.currentText
        if name in commands.PRESETS:
            self.settingsToGui(commands.apply_preset(self.settingsFromGui(), name))

    def onValidate(self, _checked=False) -> datasets.DatasetSummary | None:
        if not self.logic.ensureDependencies():
            self.ui.datasetSummaryLabel.text = "The Python packages are missing: see docs/slicer-module.md."
            return None
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            summary = datasets.validate_dataset(self.dataPaths())
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
        self.ui.stopButton.enabled = self.logic is not None and self.logic.canStop()  # also a reconnected run

    def onStart(self, _checked=False) -> None:
        settings = self.settingsFromGui()
        problems = settings.problems()
        summary = self.onValidate()
        if summary is None:
            return
        if not summary.ok:
            problems.append("The dataset check failed (see the Dataset section).")
        existing = [d for d in settings.run_dirs() if monitor.is_run_dir(d)]
        if existing:
            problems.append(f"{existing[0]} already holds a run: choose another run name, or Resume it.")
        if problems:
            slicer.util.errorDisplay("\n".join(problems), windowTitle="Cannot start training")
            return
        qt.QSettings().setValue("LungTumorSegTraining/outputDir", settings.output_dir)
        self.ui.logTextEdit.clear()
        commandLines = commands.training_commands(settings, self.logic.pythonExecutable())
        self.logic.start(commandLines, settings.run_dirs())
        self.ui.statusLabel.text = f"Training {', '.join(settings.archs)} into {settings.output_dir}"
        self.updateButtons()

    def onStop(self, _checked=False) -> None:
        if self.logic.stopRequested and self.logic.isRunning():
            if slicer.util.confirmYesNoDisplay("The process has not stopped yet. Kill it now?"):
                self.logic.kill()
            return
        if self.logic.stop():
            self.ui.statusLabel.text = "Stopping (writing a checkpoint)..."
        self.updateButtons()

    def followedRunState(self, info: monitor.RunInfo) -> None:
        """A poll of the followed run folder: Stop follows its state; the list shows its end."""
        if not self.logic.isRunning() and info.state != "running":
            self.ui.statusLabel.text = f"{info.name}: {info.summary()}"
            self.refreshRuns()
        self.updateButtons()

    def selectedRuns(self) -> list[monitor.RunInfo]:
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
        command = commands.resume_command(run.path, self.logic.pythonExecutable(), self.ui.gpusSpinBox.value)
        self.logic.start([command], [run.path])
        self.ui.statusLabel.text = f"Resuming {run.name}"
        self.updateButtons()

    def reconnectRunning(self) -> None:
        """Follow a run that is still running (e.g. started before Slicer was restarted) through its files."""
        running = [r for r in self.runs if r.state == "running"]
        if running and not self.logic.isRunning():
            self.logic.follow(running[0].path)
            self.ui.statusLabel.text = (
                f"{running[0].name} is running in another process (pid {running[0].pid}): following its files; "
                "Stop asks it to stop with a checkpoint."
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
            monitor.discover_runs(self.ui.outputPathLineEdit.currentPath.strip())
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
            installLines = self.logic.installCommands([r.path for r in runs], name, overwrite)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.logic.onFinished = self.installFinished
        self.logic.start(installLines)
        self.ui.statusLabel.text = f"Installing {name} from {', '.join(r.name for r in runs)}..."
        self.updateButtons()

    def installFinished(self, exitCode: int, ok: bool) -> None:
        self.logic.onFinished = self.processFinished
        self.logic.onRunState = self.followedRunState
        self.updateButtons()
        if ok:
            refreshed = self.logic.refreshInferenceModule()
            self.ui.statusLabel.text = "Model installed" + (" and LungTumorSeg refreshed." if refreshed else ".")
        else:
            self.ui.statusLabel.text = f"Install failed (exit code {exitCode}): see the log."
