"""Self-tests of the LungTumorSeg module, run inside 3D Slicer.

- GUI: Developer mode, then "Reload and Test" in the module panel (``LungTumorSeg.runTest`` loads this file and
  runs ``LungTumorSegTest.runTest``: every test below, the package check first).
- ctest (``slicer_add_python_unittest``, Testing/Python/CMakeLists.txt) and the headless command of
  docs/slicer-module.md run ``slicer.testing.runUnitTest``: unittest runs the ``test_*`` methods in alphabetical
  order and ignores ``runTest``, so each test that needs the engine's packages makes sure of them itself
  (``requireEngine``: installed without a prompt in testing mode, else the test is skipped with the reason;
  ``test_DependenciesInstalled`` fails in that case). No test needs the main window (``selectModule`` raises
  without one), so ``--no-main-window`` runs work too.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LungTumorSegLib.clinical import terminology
from LungTumorSegLib.core.paths import MODULE_DIR, SAMPLE_DIR
from LungTumorSegLib.slicer_glue import compare_helpers, lesion_nodes
from LungTumorSegLib.slicer_glue import dependencies as deps
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers
from LungTumorSegLib.slicer_glue.compare_logic import CompareLogic
from LungTumorSegLib.slicer_glue.dependency_install import ensureEngineDependencies
from LungTumorSegLib.slicer_glue.segmentation_logic import SegmentationLogic

CPU = helpers.SegmentSettings(device="cpu", tta=1)


class LungTumorSegTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: Developer mode → Reload and Test, ctest, or the headless command of docs/slicer-module.md."""

    SAMPLE_DIR = SAMPLE_DIR

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        """Reload and Test: the package check first, then every test (each also stands alone under ctest)."""
        names = ["test_DependenciesInstalled"] + sorted(
            name for name in dir(self) if name.startswith("test_") and name != "test_DependenciesInstalled"
        )
        for name in names:
            self.setUp()
            getattr(self, name)()

    # ---------------------------------------------------------------- helpers

    def requireEngine(self) -> None:
        """The engine's packages, installed without a prompt when missing; the test is skipped when impossible."""
        if not SegmentationLogic.missingDependencies():
            return
        self.delayDisplay("Installing LungTumorSeg's Python packages (no prompt in a test)")
        if not ensureEngineDependencies(askConfirmation=False):
            missing = ", ".join(SegmentationLogic.missingDependencies())
            self.skipTest(f"LungTumorSeg's Python packages are missing and could not be installed: {missing}")

    def widget(self):
        """The module panel, created and entered as when it is shown, without the main window's module selector
        (``selectModule`` needs it); ``parent.enter()`` is qSlicerAbstractModuleWidget's, which sets isEntered."""
        widget = slicer.util.getModuleWidget("LungTumorSeg")
        widget.parent.enter()
        return widget

    def loadNodule(self):
        return slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_nodule.nii.gz"))

    def noduleMask(self):
        import numpy as np

        node = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_nodule_mask.nii.gz"))
        mask = slicer.util.arrayFromVolume(node) > 0
        slicer.mrmlScene.RemoveNode(node)
        return mask, np.argwhere(mask).mean(axis=0)

    @staticmethod
    def dice(a, b) -> float:
        import numpy as np

        return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))

    @staticmethod
    def lesionMask(result):
        import numpy as np

        masks = [
            lesion_nodes.lesion_mask(result.segmentationNode, segmentId, result.inputVolume) > 0
            for segmentId in result.segmentIds
        ]
        return np.logical_or.reduce(masks)

    def waitFor(self, condition: Callable[[], bool], timeoutS: float, what: str) -> None:
        deadline = time.time() + timeoutS
        while not condition():
            self.assertLess(time.time(), deadline, f"timed out waiting for {what}")
            slicer.app.processEvents()
            time.sleep(0.02)

    # ---------------------------------------------------------------- tests

    def test_DependenciesInstalled(self) -> None:
        self.delayDisplay("Checking the Python packages (installing the missing ones)")
        ok = ensureEngineDependencies(askConfirmation=False)
        missing = ", ".join(SegmentationLogic.missingDependencies())
        self.assertTrue(ok, f"LungTumorSeg's Python packages are missing and could not be installed: {missing}")

    def test_SampleDataOffersTheDemos(self) -> None:
        import SampleData

        from LungTumorSeg import registerSampleData

        registerSampleData()
        node = SampleData.downloadSample("LungTumorSeg demo nodule")
        self.assertIsNotNone(node)
        self.assertTrue(node.IsA("vtkMRMLScalarVolumeNode"))
        self.assertEqual(node.GetImageData().GetDimensions(), (80, 80, 55))

    def test_SegmentDemoNodule(self) -> None:
        """The held-out LIDC-IDRI nodule: the lesion segment, its table row and RECIST lines against the engine."""
        import numpy as np

        self.requireEngine()
        self.delayDisplay("Segmenting the demo nodule on CPU (blocking)")
        ctNode = self.loadNodule()
        result = SegmentationLogic().run(ctNode, CPU)
        self.assertIsNotNone(result)
        self.assertEqual(len(result.segmentIds), 1)
        segment = result.segmentationNode.GetSegmentation().GetSegment(result.segmentIds[0])
        self.assertEqual(segment.GetName(), "Lung tumor 1")
        self.assertEqual(lesion_nodes.segment_tag(segment, "TerminologyEntry"), terminology.LUNG_TUMOR_TERMINOLOGY)
        # the bundled 0.3.0 model outlines the nodule's solid core (model card: Dice 0.47 against the readers)
        self.assertGreater(self.dice(self.lesionMask(result), self.noduleMask()[0]), 0.35)

        lesion = json.loads(Path(result.outputs["lesions"]).read_text(encoding="utf-8"))["lesions"][0]
        table = result.tableNode
        self.assertTrue(lesion_nodes.column_titles_are_header(table), "column titles must not be data row 0")
        self.assertEqual(table.GetNumberOfRows(), 1)
        volume = slicer.util.arrayFromTableColumn(table, "Volume (ml)")[0]
        self.assertAlmostEqual(float(volume), lesion["volume_ml"], delta=0.005)
        longAxis = slicer.util.arrayFromTableColumn(table, "Long axis (mm)")[0]
        self.assertAlmostEqual(float(longAxis), lesion["long_axis_mm"], delta=0.05)
        lines = {line.GetName(): line for line in result.lineNodes}
        for key, name in (("long_axis_ras", "Lung tumor 1 long axis"), ("short_axis_ras", "Lung tumor 1 short axis")):
            points = slicer.util.arrayFromMarkupsControlPoints(lines[name], world=True)
            self.assertLess(float(np.abs(points - np.array(lesion[key])).max()), 1e-3, f"{name} end points")

        display = result.entropyNode.GetDisplayNode()
        self.assertTrue(display.GetApplyThreshold())
        self.assertAlmostEqual(display.GetLowerThreshold(), helpers.ENTROPY_DISPLAY_RANGE[0])
        self.assertIn(display.GetColorNodeID(), nodes.ENTROPY_COLOR_NODE_IDS[:2], "Slicer's colour files are loaded")
        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertGreaterEqual(float(entropy.min()), 0.0)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)

        folder = Path(tempfile.mkdtemp(prefix="LungTumorSegTest-", dir=slicer.app.temporaryPath))
        written = SegmentationLogic().saveReport(result, folder)
        segmentationFile = next(p for p in written if p.name.endswith(".seg.nrrd"))
        loaded = slicer.util.loadSegmentation(str(segmentationFile))
        self.assertTrue(loaded.GetSegmentation().GetSegmentIdBySegmentName("Lung tumor 1"))
        self.assertFalse([p for p in written if p.suffix == ".dcm"], "no DICOM SEG for a CT not loaded from DICOM")
        if slicer.app.layoutManager() is not None:
            self.assertTrue(any(p.name.endswith("_3d_view.png") for p in written), "the 3D view screenshot")
        self.delayDisplay("Demo nodule test passed")

    def test_SensitivityPresetListsACandidateToAccept(self) -> None:
        """A bundle copy whose ``specific`` preset reports nothing (peak 1.0): the nodule is a candidate, one accept
        makes it the lesion segment (measured), and 'Undo last click' takes it back."""
        from LungTumorSegLib.core.paths import BUNDLED_MODELS_DIR

        self.requireEngine()
        folder = Path(tempfile.mkdtemp(prefix="LungTumorSegTest-", dir=slicer.app.temporaryPath)) / "presets"
        shutil.copytree(BUNDLED_MODELS_DIR / "lungtumorseg-ensemble", folder)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        manifest["output"]["sensitivity"] = {
            "default": "high",
            "presets": {
                "high": {"min_peak_probability": 0.5, "candidate_min_peak": 0.1, "max_candidates": 10},
                "specific": {"min_peak_probability": 1.0, "candidate_min_peak": 0.5, "max_candidates": 5},
            },
        }
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        widget = self.widget()
        widget.sensitivitySection.fillPresets(helpers.read_manifest(folder))
        self.assertEqual(widget.ui.sensitivityComboBox.count, 2)
        self.assertEqual(widget.sensitivitySection.chosenPreset(), "high")

        self.delayDisplay("Segmenting the demo nodule at a preset that lists it as a candidate")
        logic = SegmentationLogic()
        settings = helpers.SegmentSettings(device="cpu", tta=1, model=str(folder), sensitivity="specific")
        result = logic.run(self.loadNodule(), settings)
        self.assertEqual(result.segmentIds, [])
        self.assertIsNotNone(result.candidates)
        self.assertEqual(result.candidates.tableNode.GetNumberOfRows(), 1)
        segmentId = logic.acceptCandidate(result, 0)
        self.assertEqual(result.segmentIds, [segmentId])
        self.assertEqual(result.tableNode.GetNumberOfRows(), 1)
        self.assertGreater(self.dice(self.lesionMask(result), self.noduleMask()[0]), 0.35)
        self.assertTrue(logic.undoLastSeed(result))
        self.assertEqual(result.segmentIds, [])
        self.delayDisplay("Sensitivity preset and candidate test passed")

    def test_SeedClicksAddLesionsUnderATransform(self) -> None:
        """The CT under a translation: a seed click finds the nodule, a second one merges, undo takes it back."""
        import numpy as np

        self.requireEngine()
        self.delayDisplay("Seed clicks on a transformed CT")
        ctNode = self.loadNodule()
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
        shift = vtk.vtkMatrix4x4()
        shift.SetElement(0, 3, 40.0)
        shift.SetElement(2, 3, -25.0)
        transform.SetMatrixTransformToParent(shift)
        ctNode.SetAndObserveTransformNodeID(transform.GetID())
        reference, centreKji = self.noduleMask()
        local = helpers.ras_of_kji(centreKji, nodes.ijk_to_ras_array(ctNode))
        world = nodes.volume_to_world(ctNode, local)
        self.assertLess(float(np.abs(np.subtract(world, local) - [40.0, 0.0, -25.0]).max()), 1e-6)

        logic = SegmentationLogic()
        settings = helpers.SegmentSettings(device="cpu", tta=1, point_ras=tuple(local), roi_mm=60.0)
        first = logic.run(ctNode, settings, addToSegment=True)
        self.assertEqual(len(first.segmentIds), 1)
        for node in [first.segmentationNode, first.entropyNode, *first.lineNodes]:
            self.assertEqual(node.GetTransformNodeID(), transform.GetID())
        second = logic.run(
            ctNode, settings, outputSegmentation=first.segmentationNode, previous=first, addToSegment=True
        )
        self.assertEqual(second.segmentIds, first.segmentIds, "the same lesion merges into its segment")
        self.assertIs(second.tableNode, first.tableNode)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")), 2)  # CT + one entropy map
        self.assertTrue(logic.undoLastSeed(second))
        self.assertTrue(logic.undoLastSeed(second))
        self.assertEqual(second.segmentIds, [])
        self.assertFalse(logic.canUndoLastSeed(second))
        self.delayDisplay("Seed test passed")

    def test_BoxToolSegmentsAndReplacesUnderATransform(self) -> None:
        """The box section on a transformed CT: start from the model's lesion, replace it, undo, add a new lesion."""
        import numpy as np

        from LungTumorSegLib.slicer_glue import box_helpers

        if not box_helpers.box_tool_availability().available:
            widget = self.widget()
            self.assertIn("Slicer 5.10", widget.boxSection.ui.boxAvailabilityLabel.text)
            self.assertFalse(widget.boxSection.ui.segmentBoxButton.enabled)
            self.skipTest("the box tool needs Python >= 3.10 (Slicer >= 5.10); the panel says so")
        self.requireEngine()
        if importlib.util.find_spec(box_helpers.BOX_MODULE) is None:
            self.skipTest(f"{box_helpers.BOX_PACKAGE} is not installed: the box tool cannot run")
        self.delayDisplay("Box tool")
        widget, box = self.widget(), None
        ctNode = self.loadNodule()
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
        shift = vtk.vtkMatrix4x4()
        shift.SetElement(1, 3, 30.0)
        transform.SetMatrixTransformToParent(shift)
        ctNode.SetAndObserveTransformNodeID(transform.GetID())
        widget.ui.inputVolumeSelector.setCurrentNode(ctNode)
        automatic = widget.logic.run(ctNode, CPU)
        widget.showResult(automatic)
        widget._parameterNode.outputSegmentation = automatic.segmentationNode
        section = widget.boxSection
        slicer.app.processEvents()
        self.assertEqual(section.ui.boxLesionComboBox.count, 1)
        section.ui.boxFromLesionButton.click()
        box = section.ui.boxRoiSelector.currentNode()
        self.assertIsNotNone(box, "Start from selected lesion made a box")
        self.assertEqual(box.GetTransformNodeID(), transform.GetID())
        before = lesion_nodes.lesion_mask(automatic.segmentationNode, automatic.segmentIds[0], ctNode) > 0

        def segmentBox() -> None:
            section.ui.segmentBoxButton.click()
            self.assertTrue(widget.logic.isRunning(), section.ui.boxStatusLabel.text)
            self.waitFor(lambda: not widget.logic.isRunning(), 600, "the box run")
            slicer.app.processEvents()
            self.assertTrue(section.ui.boxStatusLabel.text.startswith("Done"), section.ui.boxStatusLabel.text)

        section.ui.boxReplaceRadioButton.checked = True
        segmentBox()
        result = widget._result
        self.assertEqual(result.segmentIds, automatic.segmentIds, "replace adds no segment")
        replaced = lesion_nodes.lesion_mask(result.segmentationNode, result.segmentIds[0], ctNode) > 0
        reference, _ = self.noduleMask()
        self.assertGreater(self.dice(replaced, reference), 0.5, "LiteMedSAM outlines the readers' nodule")
        self.assertTrue(section.ui.boxUndoButton.enabled)
        section.ui.boxUndoButton.click()
        restored = lesion_nodes.lesion_mask(result.segmentationNode, result.segmentIds[0], ctNode) > 0
        self.assertTrue(np.array_equal(restored, before), "undo puts the model's lesion back")
        section.ui.boxAddRadioButton.checked = True
        segmentBox()
        names = [row["segment_name"] for row in widget._result.rows]
        self.assertEqual(names, ["Lung tumor 1", "Lung tumor 2"])
        self.assertEqual(widget._result.tableNode.GetNumberOfRows(), 2)
        self.delayDisplay("Box tool test passed")

    def test_PanelFollowsTheSceneAndTheModel(self) -> None:
        """Apply follows the parameter node; the model's defaults are used; devices never import torch here."""
        self.delayDisplay("Panel state")
        torchBefore = "torch" in sys.modules
        widget = self.widget()
        self.assertFalse(widget.ui.applyButton.enabled)
        ctNode = self.loadNodule()
        widget.ui.inputVolumeSelector.setCurrentNode(ctNode)
        slicer.app.processEvents()
        self.assertTrue(widget.ui.applyButton.enabled, "Apply must follow the parameter node")
        defaults = helpers.model_output_defaults(widget._manifest)
        self.assertAlmostEqual(widget._parameterNode.minLesionMl, defaults.min_lesion_ml)
        settings = widget.currentSettings()
        self.assertIsNone(settings.threshold)
        self.assertIsNone(settings.min_lesion_ml)
        widget._parameterNode.minLesionMl = defaults.min_lesion_ml + 1.0
        self.assertAlmostEqual(widget.currentSettings().min_lesion_ml, defaults.min_lesion_ml + 1.0)
        devices = [widget.ui.deviceComboBox.itemData(i) for i in range(widget.ui.deviceComboBox.count)]
        self.assertEqual((devices[0], devices[-1]), ("auto", "cpu"))
        self.assertEqual("torch" in sys.modules, torchBefore, "the panel asked the engine process, not torch")
        slicer.mrmlScene.Clear()
        slicer.app.processEvents()
        self.assertEqual(widget._parameterNode.modelDefaultsOf, widget.ui.modelComboBox.currentText)
        self.assertAlmostEqual(widget._parameterNode.minLesionMl, defaults.min_lesion_ml, msg="reset after close")
        self.assertFalse(widget.ui.saveReportButton.enabled)
        self.assertIsNone(widget._result)
        self.assertEqual(widget.compareSection.ui.compareSummaryLabel.text, "", "the Compare section is reset too")

    def test_PanelOffersRemeasureAfterAnEdit(self) -> None:
        """An edit of a lesion segment (what the Segment Editor does) enables Re-measure; pressing it updates."""
        import numpy as np
        from scipy import ndimage

        self.requireEngine()
        self.delayDisplay("Re-measure after an edit")
        widget = self.widget()
        ctNode = self.loadNodule()
        result = widget.logic.run(ctNode, CPU)
        widget.showResult(result)
        self.assertFalse(widget.ui.remeasureButton.enabled)
        segmentId = result.segmentIds[0]
        mask = lesion_nodes.lesion_mask(result.segmentationNode, segmentId, ctNode) > 0
        eroded = ndimage.binary_erosion(mask).astype("uint8")
        slicer.util.updateSegmentBinaryLabelmapFromArray(eroded, result.segmentationNode, segmentId, ctNode)
        slicer.app.processEvents()
        self.assertTrue(widget.ui.remeasureButton.enabled, "the panel saw the edit")
        self.assertIn("Re-measure", widget.ui.summaryLabel.text)
        widget.ui.remeasureButton.click()
        self.assertFalse(widget.ui.remeasureButton.enabled)
        voxelMl = float(eroded.sum()) * float(np.prod(ctNode.GetSpacing())) / 1000.0
        self.assertAlmostEqual(result.rows[0]["volume_ml"], voxelMl, places=4)

    def test_FailuresLeaveThePanelReady(self) -> None:
        """A failed install returns False (shown by tryWithErrorDisplay); a failed start leaves nothing running."""
        self.delayDisplay("Install and start failures")
        plan = deps.InstallPlan(pip=["lungtumorseg-no-such-package==0.0.1"])
        original = deps.plan_install
        deps.plan_install = lambda requirements=None: plan
        try:
            self.assertFalse(ensureEngineDependencies(askConfirmation=False))
        finally:
            deps.plan_install = original
        self.requireEngine()  # Apply asks for the packages first
        widget = self.widget()
        widget._parameterNode.inputVolume = self.loadNodule()
        logic = widget.logic
        original = logic.pythonExecutable
        logic.pythonExecutable = lambda: str(Path(slicer.app.temporaryPath) / "no-such-dir" / "PythonSlicer")
        try:
            widget.onApplyButton()
        finally:
            logic.pythonExecutable = original
        self.assertFalse(logic.isRunning())
        self.assertTrue(widget.ui.applyButton.enabled, "the panel is ready again")
        self.assertFalse(widget.ui.cancelButton.enabled)
        self.assertIn("Could not start", widget.ui.statusLabel.text)

    def test_CancelKillsTheEngineTree(self) -> None:
        from LungTumorSegLib.slicer_glue.process import descendant_pids, pid_running

        self.requireEngine()
        self.delayDisplay("Cancelling a run mid-way")
        ctNode = self.loadNodule()
        before = slicer.mrmlScene.GetNumberOfNodes()
        logic = SegmentationLogic()
        pids = []

        def cancelOnProgress(event: helpers.ProgressEvent) -> None:
            if event.event == "progress" and not pids:
                pids.extend([logic._engine.pid, *descendant_pids(logic._engine.pid)])
                logic.cancel()

        result = logic.run(ctNode, CPU, progressCallback=cancelOnProgress)
        self.assertIsNone(result)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.assertFalse(logic.isRunning())
        self.assertTrue(pids)
        self.waitFor(lambda: not any(pid_running(pid) for pid in pids), 10, "the launcher and the engine to end")
        self.delayDisplay("Cancel test passed")

    def test_CompareWithBaseline(self) -> None:
        """The demo CT against a copy moved by 8, -5, 3 mm, with the demo GTV as both labels: SD, one match."""
        import numpy as np

        self.requireEngine()
        self.delayDisplay("Comparing the demo CT with a moved copy (blocking)")
        baseline = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))
        gtv = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz"))
        shift = np.array([8.0, -5.0, 3.0])
        movedMatrix = nodes.ijk_to_ras_array(baseline)
        movedMatrix[:3, 3] += shift  # the same voxels, the patient 8, -5, 3 mm further in RAS
        followup = slicer.util.addVolumeFromArray(
            slicer.util.arrayFromVolume(baseline).copy(), slicer.util.vtkMatrixFromArray(movedMatrix), "follow-up"
        )
        segmentations = []
        for name, volume in (("baseline GTV", baseline), ("follow-up GTV", followup)):
            kji = (slicer.util.arrayFromVolume(gtv) > 0).astype("uint8")
            segmentations.append(lesion_nodes.replace_lesion_segments(kji, 1, volume, None, name)[0])

        logic = CompareLogic()
        result = logic.run(baseline, followup, compare_helpers.CompareSettings(device="cpu"), *segmentations)
        self.assertIsNotNone(result)
        self.assertEqual(result.data["response"]["category"], "SD")
        self.assertEqual([row["match_type"] for row in result.rows], ["matched"])
        self.assertEqual(result.tableNode.GetNumberOfRows(), 1)
        self.assertTrue(lesion_nodes.column_titles_are_header(result.tableNode))
        self.assertIn("SD", result.summaryText)
        self.assertEqual(followup.GetTransformNodeID(), result.transformNode.GetID())
        fromParent = vtk.vtkMatrix4x4()
        result.transformNode.GetMatrixTransformFromParent(fromParent)  # baseline (world) -> follow-up point
        translation = np.array([fromParent.GetElement(i, 3) for i in range(3)])
        self.assertLess(float(np.linalg.norm(translation - shift)), 1.0, f"alignment {translation} vs {shift}")
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            self.assertEqual(layoutManager.layout, slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
            for viewName, volume in (("Red", baseline), ("Yellow", followup)):
                compositeNode = layoutManager.sliceWidget(viewName).sliceLogic().GetSliceCompositeNode()
                self.assertEqual(compositeNode.GetBackgroundVolumeID(), volume.GetID())
                self.assertTrue(compositeNode.GetLinkedControl())
        self.delayDisplay("Compare test passed")

    def test_SceneCloseCancelsTheRun(self) -> None:
        self.requireEngine()
        self.delayDisplay("Closing the scene during a run")
        ctNode = self.loadNodule()
        logic = SegmentationLogic()
        progress, finished = [], []
        logic.runAsync(
            ctNode,
            helpers.SegmentSettings(device="cpu", tta=8),
            progressCallback=lambda event: progress.append(event.event == "progress"),
            finishedCallback=lambda result, error: finished.append((result, error)),
        )
        self.waitFor(lambda: any(progress), 120, "the engine's first progress line")
        slicer.mrmlScene.Clear()
        self.waitFor(lambda: bool(finished), 30, "the cancelled run to report")
        self.assertEqual(finished, [(None, None)])
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")), 0)
        self.assertFalse(logic.isRunning())
        self.delayDisplay("Scene close test passed")

    def test_BatchScriptSegmentsDicomSeriesOneByOne(self) -> None:
        """A DICOM folder with a CT series, a localizer and an MR series: only the CT is segmented; the user's
        DICOM database stays the one Slicer had."""
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from LungTumorSegLib.io.demo_dicom import write_series
        from LungTumorSegLib.io.image_io import load_volume

        self.requireEngine()
        self.delayDisplay("Batch script on a DICOM folder")
        work = Path(tempfile.mkdtemp(prefix="LungTumorSegBatchTest-"))
        nodule = load_volume(self.SAMPLE_DIR / "demo_nodule.nii.gz")
        write_series(nodule, work / "dicom" / "ct", series_number=2, description="chest CT")
        write_series(nodule, work / "dicom" / "mr", modality="MR", series_number=3, description="not CT")
        scout = type(nodule)(nodule.array[:, :, :1], nodule.affine)
        write_series(scout, work / "dicom" / "scout", image_type="ORIGINAL\\PRIMARY\\LOCALIZER", series_number=1)
        script = MODULE_DIR / "Scripts" / "lungtumorseg_slicer_batch.py"
        spec = importlib.util.spec_from_file_location("lungtumorseg_slicer_batch", script)
        batch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(batch)
        databaseBefore = getattr(slicer, "dicomDatabase", None)
        before = slicer.mrmlScene.GetNumberOfNodes()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = batch.main(["--input", str(work / "dicom"), "--output", str(work / "out"), "--device", "cpu"])
        log = out.getvalue() + err.getvalue()
        self.assertEqual(code, 0, log)
        self.assertIn("1/1 case(s) segmented", log)
        self.assertIn("not CT", log)
        self.assertIn("localizer", log)
        self.assertEqual([p.name for p in (work / "out").glob("*.seg.nrrd")], ["series2_chest_CT.seg.nrrd"], log)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before, "each case removes the nodes it created")
        self.assertIs(getattr(slicer, "dicomDatabase", None), databaseBefore, "the user's database is back")
        shutil.rmtree(work, ignore_errors=True)

    def test_SegmentDemoCT(self) -> None:
        """The whole demo chest CT: the bundled model's known result, a lesion segment on the 4D-Lung GTV."""
        self.requireEngine()
        self.delayDisplay("Segmenting the demo chest CT on CPU (blocking)")
        ctNode = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))
        result = SegmentationLogic().run(ctNode, CPU)
        self.assertIsNotNone(result)
        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)
        self.assertEqual(result.tableNode.GetNumberOfRows(), len(result.segmentIds))
        gtvNode = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz"))
        gtv = slicer.util.arrayFromVolume(gtvNode) > 0
        touching = [
            row
            for row in result.rows
            if (lesion_nodes.lesion_mask(result.segmentationNode, row["segment_id"], ctNode) > 0)[gtv].any()
        ]
        self.assertTrue(touching, "a lesion segment lies on the demo tumour (model card: found, under-segmented)")
        self.assertGreater(max(row["volume_ml"] for row in touching), 1.0)
