"""Where the engine and its module's resources are (the source tree and an installed extension alike)."""

from __future__ import annotations

from pathlib import Path

LIB_DIR = Path(__file__).resolve().parents[1]  # LungTumorSegLib/
MODULE_DIR = LIB_DIR.parent  # LungTumorSeg/ (the Slicer module folder)
RESOURCES_DIR = MODULE_DIR / "Resources"
BUNDLED_MODELS_DIR = RESOURCES_DIR / "Models"
SAMPLE_DIR = RESOURCES_DIR / "Sample"
