"""The Slicer-like MRML environment of the Logic tests (see the package docstring for what is real and absent)."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

# slicer.modules.<name>.logic(): the logic class each of Slicer's loadable modules creates, and the name under which
# qSlicerCoreApplication registers it with the application logic (other logics look it up there, e.g. Volumes
# asks for "Colors").
MODULE_LOGICS = {
    "colors": ("vtkMRMLColorLogic", "Colors"),
    "volumes": ("vtkSlicerVolumesLogic", "Volumes"),
    "segmentations": ("vtkSlicerSegmentationsModuleLogic", "Segmentations"),
    "markups": ("vtkSlicerMarkupsLogic", "Markups"),
    "tables": ("vtkSlicerTablesLogic", "Tables"),
    "transforms": ("vtkSlicerTransformLogic", "Transforms"),
    "subjecthierarchy": ("vtkSlicerSubjectHierarchyModuleLogic", "SubjectHierarchy"),
    "terminologies": ("vtkSlicerTerminologiesModuleLogic", "Terminologies"),
}
# What qSlicerSegmentationsModule::setup registers in Slicer (binary labelmap <-> closed surface, fractional).
CONVERTER_RULES = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
    "vtkFractionalLabelmapToClosedSurfaceConversionRule",
)
# The terminology logic loads Slicer's terminology JSON files when it gets a scene; slicer-core has none of them, so
# it gets no scene: it still parses and writes terminology entries (all the Logic code needs).
WITHOUT_SCENE = ("terminologies",)
SLICER_ATTRIBUTES = ("mrmlScene", "app", "modules")


def slicer_core_available() -> bool:
    """True where the ``slicer-core`` wheel is installed (CPython 3.11/3.12 on Linux, macOS and Windows)."""
    return importlib.util.find_spec("slicer_core") is not None


def register_converter_rules() -> None:
    """Register the segmentation representation converters once per process (Slicer does it at start-up)."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for name in CONVERTER_RULES:
        if name not in registered:
            factory.RegisterConverterRule(getattr(slicer, name)())


class ApplicationStandIn:
    """The few ``slicer.app`` members the Logic code reads, with Slicer's batch-mode answers.

    Slicer's application (qSlicerApplication) cannot exist without Qt; this is not it.
    """

    def __init__(self, temporary_path: Path, application_logic) -> None:
        self.temporaryPath = str(temporary_path)
        self._application_logic = application_logic

    def layoutManager(self):
        """None, as in ``Slicer --no-main-window``: there are no views."""
        return None

    def applicationLogic(self):
        """The real vtkSlicerApplicationLogic of this scene."""
        return self._application_logic


class MrmlEnvironment:
    """A fresh scene with Slicer's module logics, installed as ``slicer.mrmlScene``, ``slicer.app``, ``slicer.modules``.

    Args:
        temporary_path: what ``slicer.app.temporaryPath`` returns (engine work folders go there).
    """

    def __init__(self, temporary_path: Path) -> None:
        import slicer

        register_converter_rules()
        self.scene = slicer.vtkMRMLScene()
        self.application_logic = slicer.vtkSlicerApplicationLogic()  # adds the selection and interaction nodes
        self.application_logic.SetMRMLScene(self.scene)
        self.logics = {}
        for name, (class_name, registered_name) in MODULE_LOGICS.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.application_logic)
            if name not in WITHOUT_SCENE:
                logic.SetMRMLScene(self.scene)
            self.application_logic.SetModuleLogic(registered_name, logic)
            self.logics[name] = logic
        self.app = ApplicationStandIn(temporary_path, self.application_logic)
        self.modules = types.SimpleNamespace(
            **{name: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for name, logic in self.logics.items()}
        )
        self._saved: dict[str, object] = {}

    # ---------------------------------------------------------------- install into the slicer module

    def install(self) -> MrmlEnvironment:
        """Make this the scene Slicer code sees (``slicer.mrmlScene`` ...); ``uninstall`` puts the old values back."""
        import slicer

        for name in SLICER_ATTRIBUTES:
            if hasattr(slicer, name):
                self._saved[name] = getattr(slicer, name)
        slicer.mrmlScene, slicer.app, slicer.modules = self.scene, self.app, self.modules
        return self

    def uninstall(self) -> None:
        """Clear the scene and restore the ``slicer`` module's attributes."""
        import slicer

        self.scene.Clear(True)
        for name in SLICER_ATTRIBUTES:
            if name in self._saved:
                setattr(slicer, name, self._saved[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)

    # ---------------------------------------------------------------- data

    def load_volume(self, path: Path | str, name: str | None = None, label: bool = False):
        """Load a NIfTI/NRRD file with vtkSlicerVolumesLogic (what Slicer's "Add data" does for a volume)."""
        path = Path(path)
        name = name or path.name.split(".")[0]
        node = self.logics["volumes"].AddArchetypeVolume(str(path), name, 1 if label else 0)
        if node is None:
            raise RuntimeError(f"vtkSlicerVolumesLogic could not load {path}")
        return node

    def place_in_study(self, node, patient: str = "Patient 1", study: str = "CT study") -> int:
        """Put ``node`` under a patient and a study in the subject hierarchy, as DICOM loading does; the study item."""
        hierarchy = self.scene.GetSubjectHierarchyNode()
        patient_item = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), patient)
        study_item = hierarchy.CreateStudyItem(patient_item, study)
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, study_item)
        else:
            hierarchy.CreateItem(study_item, node)
        return study_item
