"""Self-tests of the LungTumorSegTraining module, run inside 3D Slicer.

- GUI: Developer mode, then "Reload and Test" (``LungTumorSegTraining.runTest`` loads this file).
- ctest: ``slicer_add_python_unittest`` (LungTumorSegTraining/Testing/Python/CMakeLists.txt) and the headless command
  of docs/slicer-module.md run the ``test_*`` methods in alphabetical order without ``runTest``: each test that needs
  the engine's packages makes sure of them itself (``requireEngine``), or is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LungTumorSegLib.slicer_glue import dependencies as deps
from LungTumorSegTrainingLib.slicer_glue import dataset_check as datasets
from LungTumorSegTrainingLib.slicer_glue import run_monitor as monitor
from LungTumorSegTrainingLib.slicer_glue import train_commands as commands
from LungTumorSegTrainingLib.slicer_glue.training_logic import TRAINING_MODULE_DIR as MODULE_DIR
from LungTumorSegTrainingLib.slicer_glue.training_logic import TrainingLogic


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

    def requireEngine(self) -> None:
        """The engine's packages, installed without a prompt when missing; the test is skipped when impossible."""
        if not deps.plan_install().needed:
            return
        if not TrainingLogic.ensureDependencies(askConfirmation=False):
            missing = ", ".join(deps.plan_install().missing_names())
            self.skipTest(f"the training engine's Python packages are missing and could not be installed: {missing}")

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
            TrainingLogic.ensureDependencies(askConfirmation=False),
            "the training engine's Python packages are missing and could not be installed (see the log)",
        )

    def test_QuickTrainingStopResumeAndInstall(self):
        import tempfile

        from LungTumorSegLib.model.model_names import list_bundles

        self.requireEngine()
        self.delayDisplay("Quick CPU training: stop, resume, install")
        started = time.time()
        work = Path(tempfile.mkdtemp(prefix="LungTumorSegTrainingTest-"))
        dataset = datasets.build_tiny_msd(work / "tiny", self.tinyPairs())
        summary = datasets.validate_dataset([str(dataset)])
        self.assertTrue(summary.ok, summary.text())
        settings = commands.apply_preset(
            commands.TrainSettings(data=[str(dataset)], output_dir=str(work / "runs")), "Quick CPU check"
        )
        settings.run_name, settings.patch_size, settings.epochs, settings.steps_per_epoch = "quick", [32, 32, 16], 2, 2
        runDir = settings.run_dirs()[0]

        logic = TrainingLogic()
        finished, progress = [], []
        logic.onFinished = lambda code, ok: finished.append((code, ok))
        logic.onProgress = lambda fraction, message: progress.append(message)
        logic.start(commands.training_commands(settings, logic.pythonExecutable()), settings.run_dirs())
        while not progress and logic.isRunning():
            slicer.app.processEvents()
            time.sleep(0.05)
        logic.stop()  # the Stop button: the stop file, on every OS
        self.assertTrue(logic.waitForFinished(120000), "the run did not stop")
        run = monitor.read_run(runDir)
        self.assertEqual(finished[-1][0], 0, "a requested stop exits cleanly")
        self.assertEqual(run.state, "stopped", run.summary())
        self.assertTrue(run.resumable, "a stopped run keeps checkpoints/last.pt")

        logic.start([commands.resume_command(runDir, logic.pythonExecutable())], [runDir])
        self.assertTrue(logic.waitForFinished(300000), "the resumed run did not finish")
        self.assertEqual(finished[-1], (0, True))
        run = monitor.read_run(runDir)
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
