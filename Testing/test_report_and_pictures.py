"""Tests of the measurement tables, HTML report, overlay PNG, offscreen 3D snapshot and the CLI subcommands."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy import ndimage

from LungTumorSegLib.cli.measure import add_evaluate_parser, add_measure_parser, image_stem
from LungTumorSegLib.core.errors import InputError, OutputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.measurements.lesion_measurements import measure_lesions
from LungTumorSegLib.reporting.overlay import largest_area_slice, overlay_png, radiological_slice, write_overlay_png
from LungTumorSegLib.reporting.report import RESEARCH_USE_LINE, write_html_report, write_measurement_tables

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GTV_DIR = DATA / "chest-ct" / "4dlung-113_HM10395-phase40"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data missing: {path}")
    return path


@pytest.fixture(scope="module")
def real_case():
    """The 4D-Lung GTV, its CT, a crude lung mask and the measurements."""
    label = load_volume(_require(GTV_DIR / "tumor.nii.gz"), dtype=None)
    ct = load_volume(_require(GTV_DIR / "ct.nii.gz"))
    return label, ct, measure_lesions(label, ct)


@pytest.fixture(scope="module")
def crude_lung(real_case) -> Volume:
    """Test-only lung field: HU < -400 air that is not connected to the outside of the body."""
    _, ct, _ = real_case
    air = ct.array < -400
    labels, _ = ndimage.label(air)
    outside = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
    return ct.with_array((air & ~np.isin(labels, outside)).astype(np.uint8))


def read_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    return mpimg.imread(io.BytesIO(data), format="png")[..., :3]


def colour_pixels(rgb: np.ndarray, target: tuple[float, float, float], tolerance: float) -> int:
    return int(np.count_nonzero(np.abs(rgb - np.asarray(target)).max(axis=-1) <= tolerance))


def test_measurement_tables(real_case, tmp_path):
    _, _, case = real_case
    paths = write_measurement_tables(case, tmp_path, "gtv")
    assert {p.name for p in paths.values()} == {"gtv_measurements.json", "gtv_lesions.csv", "gtv_summary.csv"}
    document = json.loads(paths["json"].read_text())
    assert document["case"]["lesion_count"] == 1
    assert document["lesions"][0]["volume_ml"] == pytest.approx(case.lesions[0].volume_ml)
    rows = list(csv.DictReader(paths["lesions_csv"].open()))
    assert len(rows) == case.lesion_count
    assert float(rows[0]["long_axis_mm"]) == pytest.approx(case.lesions[0].long_axis_mm)
    assert float(rows[0]["long_axis_p1_s"]) == pytest.approx(case.lesions[0].long_axis_ras[0][2])
    assert rows[0]["target_lesion"] == "True"
    summary = list(csv.DictReader(paths["summary_csv"].open()))
    assert len(summary) == 1 and float(summary[0]["total_volume_ml"]) == pytest.approx(case.total_volume_ml)
    with pytest.raises(OutputError, match="exists"):
        write_measurement_tables(case, tmp_path, "gtv")
    assert write_measurement_tables(case, tmp_path, "gtv", overwrite=True) == paths


@pytest.mark.parametrize(
    "direction",
    [np.diag([0.9, 0.8, 3.0]), np.diag([-0.9, -0.8, 3.0]), np.array([[0, 0.9, 0], [0, 0, -0.8], [3.0, 0, 0]])],
    ids=["RAS", "LPS", "permuted"],
)
def test_radiological_orientation(direction):
    """A marker at patient right-anterior shows up top-left; the extent is the physical size."""
    spacing = np.linalg.norm(direction, axis=0)
    shape = tuple(int(round(n)) for n in np.abs(np.linalg.inv(direction) @ np.array([90.0, 80.0, 30.0])))
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = -direction @ ((np.array(shape) - 1) / 2)
    volume = Volume(np.zeros(shape, np.float32), affine)
    marker_ras = np.array([30.0, 25.0, 0.0])  # 30 mm to the patient's right, 25 mm anterior
    ijk = np.round(volume.ras_to_voxel(marker_ras)).astype(int)
    volume.array[tuple(ijk)] = 1.0
    axis = int(np.argmax(np.abs(direction[2])))
    view = radiological_slice(volume, int(ijk[axis]))
    rows, cols = np.nonzero(view.image)
    height, width = view.image.shape
    assert rows[0] < height / 2 and cols[0] < width / 2  # anterior up, patient right on the image left
    assert view.extent[1] == pytest.approx(width * spacing[np.argmax(np.abs(direction[0]))])
    assert view.extent[2] == pytest.approx(height * spacing[np.argmax(np.abs(direction[1]))])
    x, y = view.to_display(volume.voxel_to_ras(ijk))[0]
    assert (x, y) == pytest.approx(
        ((cols[0] + 0.5) * view.extent[1] / width, (rows[0] + 0.5) * view.extent[2] / height)
    )


def test_overlay_png(real_case, tmp_path):
    label, ct, case = real_case
    entropy = ct.with_array(((label.array > 0) * 0.6).astype(np.float32))
    k = largest_area_slice(label)
    areas = np.count_nonzero(label.array > 0.5, axis=(0, 1))
    assert areas[k] == areas.max()
    path = write_overlay_png(tmp_path / "overlay.png", label, ct, entropy, case)
    rgb = read_png(path.read_bytes())
    assert colour_pixels(rgb, (0.0, 1.0, 0.0), 0.25) > 50  # tumour contour
    assert colour_pixels(rgb, (1.0, 0.23, 0.23), 0.2) > 10  # RECIST long axis
    assert rgb.std() > 0.1
    with pytest.raises(OutputError):
        write_overlay_png(tmp_path / "overlay.png", label, ct, entropy, case)
    with pytest.raises(InputError):
        overlay_png(label.with_array(np.zeros(label.shape, np.uint8)))


def test_snapshot_headless(real_case, crude_lung, tmp_path, monkeypatch):
    from LungTumorSegLib.reporting.rendering import offscreen_window_class, snapshot_png, write_snapshot_png

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("VTK_DEFAULT_OPENGL_WINDOW", raising=False)
    assert offscreen_window_class() != "vtkXOpenGLRenderWindow"
    label, _, case = real_case
    data = snapshot_png(label, lung=crude_lung, case=case, size=(600, 300))
    rgb = read_png(data)
    assert rgb.shape == (300, 600, 3) and rgb.std() > 0.02
    assert np.count_nonzero((rgb[..., 0] > 0.55) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)) > 200  # tumour red
    assert np.count_nonzero((rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.65) & (rgb[..., 2] < 0.3)) > 20  # long axis
    path = write_snapshot_png(tmp_path / "snap.png", label, case=case, size=(300, 150))
    assert read_png(path.read_bytes()).shape == (150, 300, 3)
    with pytest.raises(OutputError):
        write_snapshot_png(path, label)


def test_html_report(real_case, tmp_path):
    label, ct, case = real_case
    overlay = overlay_png(label, ct, None, case, fov_mm=120, dpi=60)
    path = write_html_report(case, tmp_path / "report.html", images={"Axial overlay": overlay}, inputs={"CT": "ct"})
    text = path.read_text()
    assert RESEARCH_USE_LINE in text and "not a medical device" in text.lower()
    assert '<table class="lesions">' in text and text.count("<tr>") >= 1 + case.lesion_count
    assert f"{case.lesions[0].long_axis_mm:.1f}" in text and f"{case.total_volume_ml:.2f} ml" in text
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == 1 and base64.b64decode(embedded[0]) == overlay
    with pytest.raises(OutputError):
        write_html_report(case, path)


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lungtumorseg")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_measure_parser(subparsers)
    add_evaluate_parser(subparsers)
    return parser


def test_cli_measure(real_case, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    tumour, ct = GTV_DIR / "tumor.nii.gz", GTV_DIR / "ct.nii.gz"
    args = _cli().parse_args(["measure", str(tumour), "--ct", str(ct), "-o", str(tmp_path), "--snapshot"])
    printed = io.StringIO()
    assert args.func(args, stdout=printed) == 0
    names = {p.name for p in tmp_path.iterdir()}
    expected = {"tumor_measurements.json", "tumor_lesions.csv", "tumor_summary.csv", "tumor_overlay.png"}
    assert expected | {"tumor_report.html", "tumor_snapshot.png"} <= names
    document = json.loads((tmp_path / "tumor_measurements.json").read_text())
    assert document["case"]["total_volume_ml"] == pytest.approx(67.6, abs=0.1)
    assert document["lesions"][0]["mean_hu"] is not None
    assert "67.56" in printed.getvalue() and "tumor_report.html" in printed.getvalue()
    assert (tmp_path / "tumor_report.html").read_text().count("data:image/png;base64,") == 2
    with pytest.raises(OutputError, match="exists"):
        args.func(args, stdout=io.StringIO())
    crop_ct = _lidc_crop().parent.parent / "image" / _lidc_crop().name  # a real CT, on another grid
    bad = _cli().parse_args(["measure", str(tumour), "--ct", str(crop_ct), "-o", str(tmp_path / "x")])
    with pytest.raises(InputError, match="grid"):
        bad.func(bad)


def test_cli_evaluate(tmp_path):
    tumour, node = _require(GTV_DIR / "tumor.nii.gz"), _require(GTV_DIR / "lymph_node.nii.gz")
    parser = _cli()
    args = parser.parse_args(["evaluate", str(tumour), str(tumour), "-o", str(tmp_path), "--stem", "same"])
    printed = io.StringIO()
    assert args.func(args, stdout=printed) == 0
    same = json.loads((tmp_path / "same_evaluation.json").read_text())
    assert same["dice"] == 1.0 and same["hd95_mm"] == 0.0 and same["lesion_tp"] == 1
    assert re.search(r"Dice\s+1\.0000", printed.getvalue())

    args = parser.parse_args(["evaluate", str(node), str(tumour), "-o", str(tmp_path), "--tolerance-mm", "3"])
    assert args.func(args, stdout=io.StringIO()) == 0
    other = json.loads((tmp_path / "lymph_node_evaluation.json").read_text())
    assert other["dice"] < 0.2 and other["nsd_tolerance_mm"] == 3.0
    node_mask = load_volume(node, dtype=None).array > 0.5
    node_lesions = ndimage.label(node_mask, structure=np.ones((3, 3, 3)))[1]  # the rasterised node has fragments
    assert other["pred_lesion_count"] == node_lesions >= 1
    assert (other["lesion_tp"], other["lesion_fp"], other["lesion_fn"]) == (0, node_lesions, 1)
    rows = list(csv.DictReader((tmp_path / "lymph_node_evaluation.csv").open()))
    assert len(rows) == 1 and float(rows[0]["gt_volume_ml"]) == pytest.approx(67.6, abs=0.1)

    mismatch = parser.parse_args(["evaluate", str(_lidc_crop()), str(tumour), "-o", str(tmp_path)])
    with pytest.raises(InputError, match="same grid"):
        mismatch.func(mismatch)


def test_image_stem():
    assert image_stem(Path("a/tumor.nii.gz")) == "tumor"
    assert image_stem(Path("b.seg.nrrd")) == "b" and image_stem(Path("c.nrrd")) == "c"


def _lidc_crop() -> Path:
    crops = sorted((DATA / "lidc-nodule-crops" / "mask").glob("*.nii.gz"))
    if not crops:
        pytest.skip("LIDC crops missing")
    return crops[0]
