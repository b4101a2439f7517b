"""Make the extension's pictures from the engine's own outputs on the bundled demo samples.

- ``Resources/Icons/LungTumorSeg.png``: the extension icon (the module icon, 128 x 128).
- ``Resources/Screenshots/demo_nodule_overlay.png`` and ``demo_nodule_3d.png``: ``lungtumorseg segment`` on
  the demo nodule (axial overlay with contour, entropy and RECIST axes; offscreen VTK 3D view).
- ``LungTumorSeg/Resources/Icons/SampleData/<sample>.png``: Sample Data thumbnails (axial slice, lung window).

    python scripts/make_slicer_pictures.py        # about a minute on 2 CPU cores
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LungTumorSeg"))

from LungTumorSegLib.io.image_io import load_volume  # noqa: E402
from LungTumorSegLib.reporting.overlay import LUNG_WINDOW, radiological_slice  # noqa: E402
from LungTumorSegLib.slicer_glue.sample_data import SAMPLE_DIR, SAMPLES, THUMBNAIL_DIR, thumbnail_path  # noqa: E402

EXTENSION_ICON = ROOT / "Resources" / "Icons" / "LungTumorSeg.png"
SCREENSHOTS = ROOT / "Resources" / "Screenshots"
THUMBNAIL_PX = (260, 280)  # the size Slicer's module template recommends for Sample Data thumbnails


def thumbnail(ct_path: Path, out: Path, title: str) -> None:
    """The middle axial slice of a CT in the lung window, with a one-line title."""
    ct = load_volume(ct_path)
    axis = int(np.argmax(np.abs(ct.affine[2, :3])))
    plane = radiological_slice(ct, ct.shape[axis] // 2)
    width, level = LUNG_WINDOW
    figure = Figure(figsize=(THUMBNAIL_PX[0] / 100, THUMBNAIL_PX[1] / 100), dpi=100, facecolor="black")
    axes = figure.add_axes((0, 0, 1, 0.9))
    axes.imshow(plane.image, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, extent=plane.extent)
    axes.set_axis_off()
    figure.text(0.5, 0.95, title, color="white", ha="center", va="center", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(out))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        nodule = SAMPLE_DIR / "demo_nodule.nii.gz"
        command = [sys.executable, "-m", "LungTumorSegLib", "segment", str(nodule), "-o", tmp, "--device", "cpu"]
        subprocess.run(command, check=True, cwd=ROOT / "LungTumorSeg")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "demo_nodule_overlay.png", SCREENSHOTS / "demo_nodule_overlay.png")
        shutil.copyfile(Path(tmp) / "demo_nodule_snapshot.png", SCREENSHOTS / "demo_nodule_3d.png")
    EXTENSION_ICON.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "LungTumorSeg" / "Resources" / "Icons" / "LungTumorSeg.png", EXTENSION_ICON)
    for sample_name, file_name, _node in SAMPLES:
        thumbnail(SAMPLE_DIR / file_name, thumbnail_path(file_name, THUMBNAIL_DIR), sample_name.split(" ", 1)[1])
    for path in sorted([EXTENSION_ICON, *SCREENSHOTS.glob("*.png"), *THUMBNAIL_DIR.glob("*.png")]):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
