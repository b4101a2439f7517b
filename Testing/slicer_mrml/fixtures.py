"""pytest fixtures of the real-MRML layer (imported by Testing/conftest.py): ``mrml`` and recorded engine runs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from .environment import MrmlEnvironment, slicer_core_available

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = ROOT / "LungTumorSeg" / "Resources" / "Sample"
SKIP_REASON = "slicer-core is not installed (CPython 3.11/3.12 only; the dev extra installs it): no real MRML"


@pytest.fixture
def mrml(tmp_path):
    """A fresh real MRML scene with Slicer's module logics, installed as ``slicer.mrmlScene`` for one test."""
    if not slicer_core_available():
        pytest.skip(SKIP_REASON)
    (tmp_path / "slicer-temporary").mkdir()
    environment = MrmlEnvironment(tmp_path / "slicer-temporary").install()
    yield environment
    environment.uninstall()


@pytest.fixture
def logic(mrml):
    """The inference module's SegmentationLogic on the test's scene (test files may override it)."""
    from LungTumorSegLib.slicer_glue.segmentation_logic import SegmentationLogic

    return SegmentationLogic()


@pytest.fixture
def nodule(mrml):
    """The demo nodule CT loaded into the test's scene."""
    return mrml.load_volume(SAMPLE_DIR / "demo_nodule.nii.gz")


def record_segment_run(ct: Path, out_dir: Path, *extra: str) -> dict:
    """Run ``lungtumorseg segment`` as the module does (``--progress json``, NRRD outputs) in this process.

    Returns the engine's ``result`` event (its ``outputs``), what the Logic's job holds after a run.
    """
    from LungTumorSegLib.cli.main import main

    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    stem_input = work / "ct.nrrd"
    from LungTumorSegLib.io.image_io import load_volume, save_volume

    save_volume(load_volume(ct), stem_input, overwrite=True)
    buffer = io.StringIO()
    args = ["segment", str(stem_input), "-o", str(work / "out"), "--progress", "json", "--device", "cpu"]
    args += ["--format", "nrrd", "--overwrite", *extra]
    with contextlib.redirect_stdout(buffer):
        code = main(args)
    assert code == 0, buffer.getvalue()[-2000:]
    events = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    (result,) = [event for event in events if event.get("event") == "result"]
    return {"result": result, "work": work}


def job_from_record(record: dict, input_volume, tmp_path: Path, **options) -> dict:
    """A Logic job as ``SegmentationLogic.prepareJob`` makes it, pointing at a copy of a recorded run's files."""
    work = tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}"
    shutil.copytree(record["work"], work)
    result = json.loads(json.dumps(record["result"]).replace(str(record["work"]), str(work)))
    job = {
        "workDir": work,
        "outputDir": work / "out",
        "stem": "ct",
        "inputPath": str(work / "ct.nrrd"),
        "result": result,
        "inputVolume": input_volume,
    }
    job.update(options)
    return job


@pytest.fixture(scope="session")
def recorded_nodule_run(tmp_path_factory) -> dict:
    """The engine's outputs for the demo nodule (CPU, no TTA), recorded once per test session."""
    if not slicer_core_available():
        pytest.skip(SKIP_REASON)
    return record_segment_run(SAMPLE_DIR / "demo_nodule.nii.gz", tmp_path_factory.mktemp("nodule-run"), "--tta", "1")


@pytest.fixture(scope="session")
def recorded_seed_run(tmp_path_factory) -> dict:
    """A seed-point run (``--point`` at the demo nodule's centre, 60 mm region), recorded once per session."""
    if not slicer_core_available():
        pytest.skip(SKIP_REASON)
    import numpy as np

    from LungTumorSegLib.io.image_io import load_volume

    mask = load_volume(SAMPLE_DIR / "demo_nodule_mask.nii.gz")
    centre = mask.voxel_to_ras(np.argwhere(mask.array > 0).mean(axis=0))
    point = [f"{value:.3f}" for value in centre]
    record = record_segment_run(
        SAMPLE_DIR / "demo_nodule.nii.gz",
        tmp_path_factory.mktemp("seed-run"),
        "--tta",
        "1",
        "--point",
        *point,
        "--roi-mm",
        "60",
    )
    record["point_ras"] = tuple(float(v) for v in centre)
    return record


BOX_SLICES = (26, 28)  # three 1 mm slices through the middle of the demo nodule (stored index k): a short box run


def nodule_box_corners(k_range: tuple[int, int] = BOX_SLICES, margin: float = 0.1) -> tuple[list, list]:
    """RAS corners around the readers' demo nodule on slices ``k_range``, grown by ``margin`` of its size in-plane."""
    import numpy as np

    from LungTumorSegLib.io.image_io import load_volume

    reference = load_volume(SAMPLE_DIR / "demo_nodule_mask.nii.gz")
    sub = reference.array[:, :, k_range[0] : k_range[1] + 1] > 0
    ijk = np.argwhere(sub) + [0, 0, k_range[0]]
    corners = reference.voxel_to_ras(np.array([ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5]))
    first, last = corners.min(axis=0), corners.max(axis=0)
    grow = margin * (last - first)
    grow[2] = 0.0
    return [float(v) for v in first - grow], [float(v) for v in last + grow]


@pytest.fixture(scope="session")
def recorded_box_run(tmp_path_factory) -> dict:
    """A box run (``--box`` around the demo nodule's middle three slices, LiteMedSAM), recorded once per session."""
    if not slicer_core_available():
        pytest.skip(SKIP_REASON)
    first, last = nodule_box_corners()
    record = record_segment_run(
        SAMPLE_DIR / "demo_nodule.nii.gz",
        tmp_path_factory.mktemp("box-run"),
        "--box",
        *map(str, first),
        *map(str, last),
        "--threads",
        "2",
        "--no-pictures",
    )
    record["corners"] = (first, last)
    return record
