"""Self-tests of the LungTumorSeg module, run inside 3D Slicer.

- GUI: Developer mode, then "Reload and Test" in the module panel (``LungTumorSeg.runTest`` loads this file).
- ctest: ``slicer_add_python_unittest`` (LungTumorSeg/Testing/Python/CMakeLists.txt) runs every ``test_*`` method.
- Headless: see docs/slicer-module.md, "Self-tests".
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LungTumorSegLib.clinical import terminology
from LungTumorSegLib.core.paths import MODULE_DIR, SAMPLE_DIR
from LungTumorSegLib.slicer_glue import compare_helpers
from LungTumorSegLib.slicer_glue import dependencies as deps
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers
from LungTumorSegLib.slicer_glue.compare_logic import CompareLogic
from LungTumorSegLib.slicer_glue.dependency_install import ensureEngineDependencies
from LungTumorSegLib.slicer_glue.segmentation_logic import SegmentationLogic


class LungTumorSegTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: Developer mode → Reload and Test, or ``slicer.selfTests['LungTumorSeg']()``.

    The dependencies are checked (and installed, without a prompt) first, so a fresh Slicer fails with a
    clear message instead of an ImportError.
    """

    SAMPLE_DIR = SAMPLE_DIR

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.test_DependenciesInstalled()
        for test in (
            self.test_SampleDataOffersTheDemos,
            self.test_SegmentDemoNodule,
            self.test_SeedClicksAddLesionsUnderATransform,
            self.test_PanelFollowsTheSceneAndTheModel,
            self.test_FailuresLeaveThePanelReady,
            self.test_CancelKillsTheEngineTree,
            self.test_SceneCloseCancelsTheRun,
            self.test_BatchScriptSegmentsDicomSeriesOneByOne,
            self.test_SegmentDemoCT,
            self.test_CompareWithBaseline,
        ):
            self.setUp()
            test()

    # ---------------------------------------------------------------- helpers

    def _loadNodule(self):
        return slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_nodule.nii.gz"))

    def _noduleMask(self):
        import numpy as np

        node = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_nodule_mask.nii.gz"))
        mask = slicer.util.arrayFromVolume(node) > 0
        slicer.mrmlScene.RemoveNode(node)
        return mask, np.argwhere(mask).mean(axis=0)

    @staticmethod
    def _dice(a, b) -> float:
        import numpy as np

        return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))

    def _waitFor(self, condition: Callable[[], bool], timeoutS: float, what: str) -> None:
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
        """The held-out LIDC-IDRI nodule: Dice against the radiologists' mask, table, lines, entropy display."""
        self.delayDisplay("Segmenting the demo nodule on CPU (blocking)")
        ctNode = self._loadNodule()
        result = SegmentationLogic().run(ctNode, helpers.SegmentSettings(device="cpu", tta=1))
        self.assertIsNotNone(result)
        segmentation = result.segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(terminology.LUNG_TUMOR_SEGMENT_NAME)
        tag = vtk.mutable("")
        segmentation.GetSegment(segmentId).GetTag("TerminologyEntry", tag)
        self.assertEqual(str(tag), terminology.LUNG_TUMOR_TERMINOLOGY)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, ctNode) > 0
        dice = self._dice(mask, self._noduleMask()[0])
        self.assertGreater(dice, 0.7, "the segmentation should match the radiologists' nodule mask")

        self.assertTrue(result.tableNode.GetUseColumnNameAsColumnHeader(), "column names must not be data row 0")
        self.assertEqual(result.tableNode.GetTable().GetNumberOfRows(), len(result.rows))
        self.assertGreaterEqual(len(result.rows), 1)
        self.assertEqual(helpers.lesion_row_of_table_row(0, True, len(result.rows)), 0)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), len(result.lineNodes))

        display = result.entropyNode.GetDisplayNode()
        self.assertTrue(display.GetApplyThreshold())
        self.assertAlmostEqual(display.GetLowerThreshold(), helpers.ENTROPY_DISPLAY_RANGE[0])
        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertGreaterEqual(float(entropy.min()), 0.0)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)
        folder = Path(tempfile.mkdtemp(prefix="LungTumorSegTest-", dir=slicer.app.temporaryPath))
        written = SegmentationLogic().saveReport(result, folder)
        segmentationFile = next(p for p in written if p.name.endswith(".seg.nrrd"))
        loaded = slicer.util.loadSegmentation(str(segmentationFile))
        self.assertTrue(loaded.GetSegmentation().GetSegmentIdBySegmentName(terminology.LUNG_TUMOR_SEGMENT_NAME))
        self.assertFalse([p for p in written if p.suffix == ".dcm"], "no DICOM SEG for a CT not loaded from DICOM")
        self.delayDisplay(f"Demo nodule test passed (Dice {dice:.2f})")

    def test_SeedClicksAddLesionsUnderATransform(self) -> None:
        """The CT under a translation: a seed click (world) finds the nodule; a second click on the same nodule
        merges into the segment and reuses the nodes; everything created follows the CT's transform."""
        import numpy as np

        self.delayDisplay("Seed clicks on a transformed CT")
        ctNode = self._loadNodule()
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
        shift = vtk.vtkMatrix4x4()
        shift.SetElement(0, 3, 40.0)
        shift.SetElement(2, 3, -25.0)
        transform.SetMatrixTransformToParent(shift)
        ctNode.SetAndObserveTransformNodeID(transform.GetID())
        reference, centreKji = self._noduleMask()
        matrix = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(matrix)
        local = helpers.ras_of_kji(centreKji, slicer.util.arrayFromVTKMatrix(matrix))
        world = nodes.volume_to_world(ctNode, local)
        np.testing.assert_allclose(np.subtract(world, local), [40.0, 0.0, -25.0], atol=1e-6)
        np.testing.assert_allclose(nodes.world_to_volume(ctNode, world), local, atol=1e-6)

        logic = SegmentationLogic()
        settings = helpers.SegmentSettings(device="cpu", tta=1, point_ras=tuple(local), roi_mm=60.0)
        first = logic.run(ctNode, settings, addToSegment=True)
        self.assertGreaterEqual(len(first.rows), 1)
        for node in [first.segmentationNode, first.entropyNode, *first.lineNodes]:
            self.assertEqual(node.GetTransformNodeID(), transform.GetID())
        second = logic.run(
            ctNode, settings, outputSegmentation=first.segmentationNode, previous=first, addToSegment=True
        )
        self.assertIs(second.entropyNode, first.entropyNode)
        self.assertIs(second.tableNode, first.tableNode)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")), 2)  # CT + one entropy map
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLTableNode")), 1)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), len(second.lineNodes))
        segmentId = second.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(
            terminology.LUNG_TUMOR_SEGMENT_NAME
        )
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(second.segmentationNode, segmentId, ctNode) > 0
        self.assertGreater(self._dice(mask, reference), 0.7)
        self.delayDisplay("Seed test passed")

    def test_PanelFollowsTheSceneAndTheModel(self) -> None:
        """Apply becomes enabled when a CT is loaded while the panel is open; the model's defaults are used."""
        self.delayDisplay("Panel state")
        slicer.util.selectModule("LungTumorSeg")
        widget = slicer.modules.lungtumorseg.widgetRepresentation().self()
        self.assertFalse(widget.ui.applyButton.enabled)
        self._loadNodule()
        ctNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
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
        slicer.mrmlScene.Clear()
        slicer.app.processEvents()
        self.assertEqual(widget._parameterNode.modelDefaultsOf, widget.ui.modelComboBox.currentText)
        self.assertAlmostEqual(widget._parameterNode.minLesionMl, defaults.min_lesion_ml, msg="reset after close")
        self.assertFalse(widget.ui.saveReportButton.enabled)
        self.assertIsNone(widget._result)

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
        slicer.util.selectModule("LungTumorSeg")
        widget = slicer.modules.lungtumorseg.widgetRepresentation().self()
        widget._parameterNode.inputVolume = self._loadNodule()
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

        self.delayDisplay("Cancelling a run mid-way")
        ctNode = self._loadNodule()
        before = slicer.mrmlScene.GetNumberOfNodes()
        logic = SegmentationLogic()
        pids = []

        def cancelOnProgress(event: helpers.ProgressEvent) -> None:
            if event.event == "progress" and not pids:
                pids.extend([logic._engine.pid, *descendant_pids(logic._engine.pid)])
                logic.cancel()

        result = logic.run(ctNode, helpers.SegmentSettings(device="cpu", tta=1), progressCallback=cancelOnProgress)
        self.assertIsNone(result)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.assertFalse(logic.isRunning())
        self.assertTrue(pids)
        self._waitFor(lambda: not any(pid_running(pid) for pid in pids), 10, "the launcher and the engine to end")
        self.delayDisplay("Cancel test passed")

    def test_CompareWithBaseline(self) -> None:
        """The demo CT against a copy moved by 8, -5, 3 mm, with the demo GTV as both labels: SD, one match."""
        import numpy as np

        self.delayDisplay("Comparing the demo CT with a moved copy (blocking)")
        baseline = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))
        gtv = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz"))
        shift = np.array([8.0, -5.0, 3.0])
        matrix = vtk.vtkMatrix4x4()
        baseline.GetIJKToRASMatrix(matrix)
        movedMatrix = slicer.util.arrayFromVTKMatrix(matrix)
        movedMatrix[:3, 3] += shift  # the same voxels, the patient 8, -5, 3 mm further in RAS
        followup = slicer.util.addVolumeFromArray(
            slicer.util.arrayFromVolume(baseline).copy(), slicer.util.vtkMatrixFromArray(movedMatrix), "follow-up"
        )
        followupGtv = slicer.util.addVolumeFromArray(
            slicer.util.arrayFromVolume(gtv).copy(),
            slicer.util.vtkMatrixFromArray(movedMatrix),
            "follow-up GTV",
            nodeClassName="vtkMRMLLabelMapVolumeNode",
        )
        segmentations = []
        for name, labelNode in (("baseline GTV", gtv), ("follow-up GTV", followupGtv)):
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
            segmentations.append(segmentationNode)

        logic = CompareLogic()
        result = logic.run(baseline, followup, compare_helpers.CompareSettings(device="cpu"), *segmentations)
        self.assertIsNotNone(result)
        self.assertEqual(result.data["response"]["category"], "SD")
        self.assertEqual([row["match_type"] for row in result.rows], ["matched"])
        self.assertEqual(result.tableNode.GetTable().GetNumberOfRows(), 1)
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
        self.delayDisplay("Closing the scene during a run")
        ctNode = self._loadNodule()
        logic = SegmentationLogic()
        progress, finished = [], []
        logic.runAsync(
            ctNode,
            helpers.SegmentSettings(device="cpu", tta=8),
            progressCallback=lambda event: progress.append(event.event == "progress"),
            finishedCallback=lambda result, error: finished.append((result, error)),
        )
        self._waitFor(lambda: any(progress), 120, "the engine's first progress line")
        slicer.mrmlScene.Clear()
        self._waitFor(lambda: bool(finished), 30, "the cancelled run to report")
        self.assertEqual(finished, [(None, None)])
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")), 0)
        self.assertFalse(logic.isRunning())
        self.delayDisplay("Scene close test passed")

    def test_BatchScriptSegmentsDicomSeriesOneByOne(self) -> None:
        """A DICOM folder with a CT series, a localizer and an MR series: only the CT is segmented."""
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from LungTumorSegLib.io.demo_dicom import write_series
        from LungTumorSegLib.io.image_io import load_volume

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
        before = slicer.mrmlScene.GetNumberOfNodes()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = batch.main(["--input", str(work / "dicom"), "--output", str(work / "out"), "--device", "cpu"])
        log = out.getvalue() + err.getvalue()
        self.assertEqual(code, 0, log)
        self.assertIn("1/1 case(s) segmented", log)
        self.assertIn("not CT", log)
        self.assertIn("localizer", log)
        self.assertEqual(len(list((work / "out").glob("*.seg.nrrd"))), 1, log)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before, "each case removes the nodes it created")
        shutil.rmtree(work, ignore_errors=True)

    def test_SegmentDemoCT(self) -> None:
        from LungTumorSegLib.model.model_names import default_model, finds_demo_tumour

        self.delayDisplay("Segmenting the demo chest CT on CPU (blocking)")
        ctNode = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))
        result = SegmentationLogic().run(ctNode, helpers.SegmentSettings(device="cpu", tta=1))
        self.assertIsNotNone(result)
        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)
        models = helpers.available_models()
        name = default_model(models)
        if not (name and finds_demo_tumour(helpers.read_manifest(models[name]))):
            # The default model's manifest does not report finding the whole-volume 4D-Lung GTV (the demo CT's
            # tumour): the location check runs for models whose metrics say they do.
            self.delayDisplay("Default model not validated on the demo tumour: skipping the location check")
            return
        segmentId = result.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(
            terminology.LUNG_TUMOR_SEGMENT_NAME
        )
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, ctNode) > 0
        gtv = slicer.util.arrayFromVolume(slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz")))
        overlap = (mask & (gtv > 0)).sum() / max(1, (gtv > 0).sum())
        self.assertGreater(overlap, 0.5, "the segmentation should cover most of the demo GTV")
