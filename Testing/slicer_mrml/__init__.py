"""Real MRML for pytest: a Slicer-like environment built from slicer-core (no Slicer application, no Qt).

What is real: the scene (``vtkMRMLScene``), every node class, the segmentation converter rules, and the module
logics of Volumes, Segmentations, Markups, Tables, Transforms, Subject hierarchy, Terminologies and Colors,
all from Kitware's ``slicer-core`` wheel (Slicer's own C++ compiled for Python). ``slicer.util`` is Slicer's own.

What is absent, as in ``Slicer --no-main-window`` batch mode and more: Slicer's application (Qt), its IO manager
(``slicer.util.loadVolume``/``saveNode`` need it: load with ``MrmlEnvironment.load_volume``), the layout manager
(``slicer.app.layoutManager()`` returns None), scripted modules (SampleData, DICOM) and the subject hierarchy's Qt
plugins (they create an item for every new data node in Slicer; here a node has an item only once code creates it).
``slicer.app`` is a small stand-in with ``temporaryPath``, ``layoutManager()`` and ``applicationLogic()`` only.

Usage (see Testing/conftest.py): the ``mrml`` fixture gives a fresh :class:`MrmlEnvironment` per test, set as
``slicer.mrmlScene`` / ``slicer.app`` / ``slicer.modules``, and puts the previous values back afterwards.
"""

from __future__ import annotations

from .environment import MODULE_LOGICS, MrmlEnvironment, slicer_core_available

__all__ = ["MODULE_LOGICS", "MrmlEnvironment", "slicer_core_available"]
