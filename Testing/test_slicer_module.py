"""The Slicer module's testable parts, without Slicer: pure helpers, the .ui file, CMake lists, the API check."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nrrd
import numpy as np
import pytest

from LungTumorSegLib.cli.main import build_parser
from LungTumorSegLib.clinical import terminology
from LungTumorSegLib.core.progress import ProgressReporter
from LungTumorSegLib.io.image_io import load_volume, save_volume
from LungTumorSegLib.slicer_glue import segment_helpers as helpers

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "LungTumorSeg"
MODULE_PY = MODULE_DIR / "LungTumorSeg.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LungTumorSeg.ui"
DEMO_CT = MODULE_DIR / "Resources" / "Sample" / "demo_ct.nii.gz"
DEMO_GTV = MODULE_DIR / "Resources" / "Sample" / "demo_ct_gtv.nii.gz"
API_CHECK = ROOT.parent / "shared" / "tools" / "slicer_api_check.py"


# ---------------------------------------------------------------- geometry


@pytest.fixture(scope="module")
def demo_ct():
    return load_volume(DEMO_CT)


def test_kji_round_trip_on_demo_ct(demo_ct):
    kji, ijk_to_ras = helpers.kji_from_volume(demo_ct)
    assert kji.shape == demo_ct.shape[::-1]
    back = helpers.volume_from_kji(kji, ijk_to_ras)
    assert back.same_grid(demo_ct, atol=0)
    np.testing.assert_array_equal(back.array, demo_ct.array)
    ni, nj, nk = demo_ct.shape
    for i, j, k in [(0, 0, 0), (ni - 1, nj // 3, nk - 1), (ni // 2, nj // 2, nk // 2), (7, nj - 2, 3)]:
        assert kji[k, j, i] == demo_ct.array[i, j, k]
        np.testing.assert_allclose(helpers.ras_of_kji((k, j, i), ijk_to_ras), demo_ct.voxel_to_ras([i, j, k]))
        np.testing.assert_allclose(back.voxel_to_ras([i, j, k]), demo_ct.voxel_to_ras([i, j, k]))


def test_exported_nrrd_gives_same_ras_as_slicer_would_read(demo_ct, tmp_path):
    """The temp NRRD the module hands to the engine: voxel (i,j,k) sits at the same RAS point, read independently."""
    kji, ijk_to_ras = helpers.kji_from_volume(demo_ct)
    path = save_volume(helpers.volume_from_kji(kji, ijk_to_ras), tmp_path / "ct.nrrd")
    data, header = nrrd.read(str(path))  # Slicer reads NRRD with pynrrd's axis order (i fastest)
    assert header["space"] == "left-posterior-superior"
    directions, origin = np.asarray(header["space directions"], float), np.asarray(header["space origin"], float)
    i, j, k = 11, 23, 5
    lps = origin + np.array([i, j, k]) @ directions
    ras = lps * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(ras, helpers.ras_of_kji((k, j, i), ijk_to_ras), atol=1e-4)
    assert data[i, j, k] == kji[k, j, i]


# ---------------------------------------------------------------- progress protocol


def test_parse_real_protocol_lines():
    stream = io.StringIO()
    reporter = ProgressReporter("json", stream)
    reporter.update("inference", 0.4237, "member unet, flip 3/8")
    reporter.log("warning", "CUDA out of memory: falling back to CPU")
    reporter.emit("result", outputs={"tumor": "/o/ct_tumor.nrrd"}, summary={"lesions": {"count": 1}})
    reporter.emit("error", message="ct.nii.gz: expected a 3D image, got 4D")
    events = [helpers.parse_progress_line(line) for line in stream.getvalue().splitlines()]
    assert [e.event for e in events] == ["progress", "log", "result", "error"]
    assert events[0].fraction == pytest.approx(0.4237)
    assert events[0].step_label == "Running the networks"
    assert events[0].message == "member unet, flip 3/8"
    assert events[1].data["level"] == "warning"
    assert events[2].data["outputs"]["tumor"] == "/o/ct_tumor.nrrd"
    assert events[3].message.endswith("got 4D")


@pytest.mark.parametrize(
    "line, event",
    [
        ("", None),
        ("   \n", None),
        ("Traceback (most recent call last):", "text"),
        ('{"event": "progress", "fraction": 0.5', "text"),  # truncated JSON
        ('{"no_event": 1}', "text"),
        ("[1, 2]", "text"),
        (b'{"event": "log", "level": "info", "message": "h\xc3\xa9"}\n', "log"),
        (b"\xff\xfe garbage", "text"),
    ],
)
def test_parse_robust_to_non_json(line, event):
    parsed = helpers.parse_progress_line(line)
    assert (parsed.event if parsed else None) == event


def test_progress_fraction_clamped_and_bad_values():
    assert helpers.parse_progress_line('{"event":"progress","fraction":1.7}').fraction == 1.0
    assert helpers.parse_progress_line('{"event":"progress","fraction":"x"}').fraction is None
    assert helpers.parse_progress_line('{"event":"progress","step":"custom"}').step_label == "Custom"


def test_line_buffer_reassembles_chunks():
    buffer = helpers.LineBuffer()
    line1 = json.dumps({"event": "progress", "step": "load", "fraction": 0.0})
    line2 = json.dumps({"event": "result", "outputs": {}})
    data = (line1 + "\nnoise line\n" + line2).encode()
    events = []
    for start in range(0, len(data), 7):  # arbitrary chunking, also splitting multi-byte boundaries is avoided
        events += buffer.feed(data[start : start + 7])
    events += buffer.flush()
    assert [e.event for e in events] == ["progress", "text", "result"]
    assert buffer.flush() == []


# ---------------------------------------------------------------- lesion table


def test_table_rows_from_real_measurements(demo_ct):
    from LungTumorSegLib.measurements.lesion_measurements import measure_lesions

    gtv = load_volume(DEMO_GTV)
    data = json.loads(json.dumps(measure_lesions(gtv, demo_ct).to_dict()))  # as the JSON file holds it
    rows = helpers.lesion_rows(data)
    assert len(rows) == data["case"]["lesion_count"] >= 1
    expected_ml = np.count_nonzero(gtv.array > 0.5) * gtv.voxel_volume_ml
    assert sum(r["volume_ml"] for r in rows) == pytest.approx(expected_ml, rel=1e-3)
    for row in rows:
        assert row["volume_ml"] > 0
        assert row["long_axis_mm"] >= row["short_axis_mm"] > 0
        assert row["max_diameter_3d_mm"] >= row["long_axis_mm"] - 1e-6
        p1, p2 = row["long_axis_ras"]
        assert np.linalg.norm(np.subtract(p1, p2)) == pytest.approx(row["long_axis_mm"], rel=1e-3, abs=1e-3)
        assert len(row["centroid_ras"]) == 3
        assert np.isnan(row["mean_entropy"])  # no entropy given
    text = helpers.case_summary_text(data)
    assert text.startswith(f"{len(rows)} lesion(s), total {expected_ml:.2f} ml")
    assert "sum of longest diameters" in text
    assert helpers.table_value("volume_ml", rows[0]) == round(rows[0]["volume_ml"], 2)


def test_table_rows_defensive():
    data = [{"volume_ml": "2.5", "long_axis_ras": [[0, 0, 0]], "centroid_ras": [1, 2, "x"], "measurable": 1}, 42]
    (row,) = helpers.lesion_rows(data)
    assert row["lesion_id"] == 1 and row["volume_ml"] == 2.5 and row["measurable"] is True
    assert row["long_axis_ras"] is None and row["centroid_ras"] is None
    assert np.isnan(row["short_axis_mm"])
    assert np.isnan(helpers.table_value("short_axis_mm", row))
    assert helpers.table_value("measurable", {"measurable": False}) == "no"
    assert helpers.lesion_rows({"unexpected": 1}) == [] and helpers.lesion_rows(None) == []
    assert helpers.case_summary_text({"lesions": []}).startswith("0 lesion(s): no lesion found.")


def test_find_measurements_file(tmp_path):
    assert helpers.find_measurements_file({}, tmp_path, "ct") is None
    (tmp_path / "ct_lesions.json").write_text("{}")
    assert helpers.find_measurements_file({}, tmp_path, "ct") == tmp_path / "ct_lesions.json"
    other = tmp_path / "x.json"
    other.write_text("{}")
    assert helpers.find_measurements_file({"lesions": str(other)}, tmp_path, "ct") == other
    (tmp_path / "ct_report.html").write_text("<html/>")
    assert [p.name for p in helpers.report_files(tmp_path, "ct")] == ["ct_report.html", "ct_lesions.json"]


# ---------------------------------------------------------------- terminology


def test_terminology_string():
    assert terminology.LUNG_TUMOR_TERMINOLOGY == (
        "Segmentation category and type - DICOM master list"
        "~SCT^49755003^Morphologically Altered Structure~SCT^108369006^Neoplasm~^^"
        "~Anatomic codes - DICOM master list~SCT^39607008^Lung~^^"
    )
    parts = terminology.parse_terminology_entry(terminology.LUNG_TUMOR_TERMINOLOGY)
    assert parts["type"] == ("SCT", "108369006", "Neoplasm")
    assert parts["region"] == ("SCT", "39607008", "Lung")
    assert parts["type_modifier"] == ("", "", "")
    with pytest.raises(ValueError):
        terminology.parse_terminology_entry("a~b")


# ---------------------------------------------------------------- command line


def test_build_command_parsed_by_engine():
    settings = helpers.SegmentSettings(
        model="lungtumorseg-unet",
        tta=4,
        device="cpu",
        threshold=0.35,
        min_lesion_ml=0.25,
        point_ras=(-50.1234, 20.0, -120.5),
        roi_mm=60,
    )
    cmd = helpers.build_segment_command("/usr/bin/python3", "/tmp/in/ct.nrrd", "/tmp/out", settings)
    assert cmd[:4] == ["/usr/bin/python3", "-m", "LungTumorSegLib", "segment"]
    args = build_parser().parse_args(cmd[3:])
    assert args.inputs == [Path("/tmp/in/ct.nrrd")] and args.output == Path("/tmp/out")
    assert (args.model, args.tta, args.device, args.progress) == ("lungtumorseg-unet", 4, "cpu", "json")
    assert args.threshold == pytest.approx(0.35) and args.min_lesion_ml == pytest.approx(0.25)
    assert args.point == pytest.approx([-50.123, 20.0, -120.5]) and args.roi_mm == 60
    assert args.format == "nrrd" and args.overwrite and not args.no_pictures


def test_build_command_defaults_and_validation():
    cmd = helpers.build_segment_command("py", "in.nrrd", "out", helpers.SegmentSettings(pictures=False))
    args = build_parser().parse_args(cmd[3:])
    assert args.model is None and args.tta is None and args.threshold is None and args.point is None
    assert args.device == "auto" and args.no_pictures
    with pytest.raises(ValueError):
        helpers.build_segment_command("py", "a", "b", helpers.SegmentSettings(tta=3))
    with pytest.raises(ValueError):
        helpers.build_segment_command("py", "a", "b", helpers.SegmentSettings(device="gpu"))


def test_engine_environment_puts_module_first():
    env = helpers.engine_environment({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(helpers.MODULE_DIR), "/x"]
    assert (helpers.MODULE_DIR / "LungTumorSegLib" / "__main__.py").is_file()


# ---------------------------------------------------------------- model bundles


def test_models_listed_and_described(placeholder_bundle, monkeypatch):
    monkeypatch.setenv("LUNGTUMORSEG_MODELS", str(placeholder_bundle.parent))
    models = helpers.available_models()
    assert placeholder_bundle.name in models and len(models) >= 2  # the shipped model(s) + the user's
    manifest = helpers.read_manifest(models[placeholder_bundle.name])
    text = helpers.describe_members(manifest)
    assert "unet (UNet) w=0.50" in text and "swinunetr (SwinUNETR) w=0.50" in text and "placeholder" in text


def test_install_bundle_folder_and_zip(tmp_path):
    source = tmp_path / "src" / "mymodel"
    source.mkdir(parents=True)
    (source / "manifest.json").write_text(json.dumps({"name": "mymodel", "members": []}))
    (source / "w.safetensors").write_bytes(b"123")
    models = tmp_path / "models"
    target = helpers.install_bundle(source, models)
    assert target == models / "mymodel" and (target / "w.safetensors").read_bytes() == b"123"
    with pytest.raises(FileExistsError):
        helpers.install_bundle(source, models)
    (source / "w.safetensors").write_bytes(b"456")
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in source.iterdir():
            z.write(f, f"mymodel/{f.name}")
    with pytest.raises(FileExistsError):
        helpers.install_bundle(archive, models)
    assert (target / "w.safetensors").read_bytes() == b"123"  # never replaced without asking
    helpers.install_bundle(archive, models, overwrite=True)
    assert (target / "w.safetensors").read_bytes() == b"456"
    assert sorted(p.name for p in models.iterdir()) == ["mymodel"]  # no staging leftovers
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ValueError):
        helpers.install_bundle(bad, models)


# ---------------------------------------------------------------- .ui file and module source


def _ui_names_used_by_module() -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(MODULE_PY.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if inner.attr == "ui" and isinstance(inner.value, ast.Name) and inner.value.id == "self":
                names.add(node.attr)
    return names


def _load_ui_in_subprocess() -> dict:
    """Load the .ui with PySide6 QUiLoader (offscreen) in a child process; custom widgets become their base class."""
    pytest.importorskip("PySide6.QtUiTools")
    code = r"""
import json, re, sys
from PySide6 import QtWidgets
from PySide6.QtUiTools import QUiLoader
from PySide6.QtCore import QFile
ui_path = sys.argv[1]
text = open(ui_path, encoding="utf-8").read()
bases = dict(re.findall(r"<class>(\w+)</class>\s*<extends>(\w+)</extends>", text))
class Loader(QUiLoader):
    def createWidget(self, class_name, parent=None, name=""):
        if class_name in bases:
            widget = super().createWidget(bases[class_name], parent, name)
            widget.setProperty("slicerClass", class_name)
            return widget
        return super().createWidget(class_name, parent, name)
app = QtWidgets.QApplication([])
f = QFile(ui_path); f.open(QFile.ReadOnly)
loader = Loader()
root = loader.load(f)
if root is None:
    print(json.dumps({"error": loader.errorString()})); sys.exit(0)
children = root.findChildren(QtWidgets.QWidget)
widgets = {w.objectName(): (w.property("slicerClass") or type(w).__name__) for w in children}
params = {w.objectName(): w.property("SlicerParameterName") for w in root.findChildren(QtWidgets.QWidget)
          if w.property("SlicerParameterName")}
print(json.dumps({"root": root.objectName(), "widgets": widgets, "params": params}))
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run(
        [sys.executable, "-c", code, str(UI_FILE)], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ui_loads_and_has_every_widget_the_module_uses():
    loaded = _load_ui_in_subprocess()
    assert "error" not in loaded, loaded
    assert loaded["root"] == "LungTumorSeg"
    used = _ui_names_used_by_module()
    assert {"inputVolumeSelector", "applyButton", "cancelButton", "progressBar", "resultsTableView"} <= used
    missing = sorted(used - set(loaded["widgets"]))
    assert not missing, f"LungTumorSeg.py uses widgets missing from the .ui: {missing}"
    widgets = loaded["widgets"]
    assert widgets["inputVolumeSelector"] == "qMRMLNodeComboBox"
    assert widgets["resultsTableView"] == "qMRMLTableView"
    assert widgets["seedPlaceWidget"] == "qSlicerMarkupsPlaceWidget"


def test_ui_parameter_names_match_parameter_node():
    loaded = _load_ui_in_subprocess()
    source = MODULE_PY.read_text(encoding="utf-8")
    block = source.split("class LungTumorSegParameterNode:")[1].split("\n\n\n")[0]
    fields = set(re.findall(r"^    (\w+):", block, flags=re.M))
    assert set(loaded["params"].values()) <= fields
    assert {"inputVolume", "threshold", "minLesionMl", "entropyOpacity", "showIn3D"} <= set(loaded["params"].values())


# ---------------------------------------------------------------- CMake, icon, API check


def test_cmake_lists_every_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+(\S+)\s*$", text, flags=re.M))
    on_disk = {
        str(p.relative_to(MODULE_DIR))
        for p in (MODULE_DIR / "Resources").rglob("*")
        if p.is_file()
        and p.parts[-3] in ("Models", "Resources", "Icons")
        and "__pycache__" not in p.parts
        and p.parent.name not in ("Icons", "UI")
    }
    assert "Resources/Icons/SampleData/demo_nodule.png" in on_disk  # Sample Data thumbnails ship too
    missing = sorted(on_disk - listed)
    assert not missing, f"add these to LungTumorSeg/CMakeLists.txt: {missing}"
    assert "${MODULE_NAME}.py" in listed and "Resources/UI/${MODULE_NAME}.ui" in listed
    assert "Resources/Icons/${MODULE_NAME}.png" in listed
    for entry in listed:
        if "/" in entry and "$" not in entry:
            assert (MODULE_DIR / entry).exists(), f"CMakeLists.txt lists a missing file: {entry}"


def test_icon_is_128_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "LungTumorSeg.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 128 and int.from_bytes(data[20:24], "big") == 128


def test_slicer_api_check_passes():
    if not API_CHECK.is_file():
        pytest.skip(f"{API_CHECK} not available")
    python = shutil.which("python3") or sys.executable
    out = subprocess.run(
        [python, str(API_CHECK), "LungTumorSeg"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 unknown" in out.stdout


# ---------------------------------------------------------------- devices


def test_the_panel_asks_the_engine_process_for_gpus():
    """Slicer's process never imports torch for the device list: the engine answers ``devices --json``."""
    import time

    from LungTumorSegLib.slicer_glue.device_query import DeviceQuery, device_choices, parse_devices

    query = DeviceQuery(sys.executable)
    query.start()
    deadline = time.monotonic() + 120
    while not query.done():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    import torch

    expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert len(query.gpus()) == expected
    gpus = parse_devices(
        'noise\n{"torch": "2.13.0", "cuda": [{"index": 0, "name": "NVIDIA H200", "memory_gb": 139.8}]}'
    )
    assert gpus == [{"index": 0, "name": "NVIDIA H200", "memory_gb": 139.8}]
    assert parse_devices("Traceback ...") == [] and parse_devices("") == []
    choices = device_choices(gpus)
    assert choices == [("Auto", "auto"), ("GPU 0 (NVIDIA H200)", "cuda:0"), ("CPU", "cpu")]
    assert device_choices() == [("Auto", "auto"), ("CPU", "cpu")]
    command = helpers.build_segment_command("py", "ct.nrrd", "out", helpers.SegmentSettings(device=choices[1][1]))
    assert build_parser().parse_args(command[3:]).device == "cuda:0"


def test_a_missing_engine_answers_no_gpu(tmp_path):
    from LungTumorSegLib.slicer_glue.device_query import DeviceQuery

    query = DeviceQuery(str(tmp_path / "no-such-python"))
    query.start()
    assert query.done() and query.gpus() == []


def test_devices_command_prints_json(capsys):
    from LungTumorSegLib.cli.main import main

    assert main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"torch", "cuda", "mps"} and isinstance(report["cuda"], list)
    assert main(["devices"]) == 0 and "torch" in capsys.readouterr().out
