"""The command line: outputs on the input grid, JSON progress, and clear errors that write nothing."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO_CT, assert_outputs_kept_unless_overwrite, make_pointwise_bundle, shared

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.io.image_io import load_volume


@pytest.fixture(scope="module")
def fast_bundle(tmp_path_factory):
    """A real pointwise bundle (fast on CPU) at the demo CT's spacing."""
    return make_pointwise_bundle(tmp_path_factory.mktemp("models") / "pointwise", spacing=(2.0, 2.0, 3.0), tta=2)


def test_segment_writes_every_output_on_the_input_grid(tmp_path, fast_bundle, capsys):
    code = main(["segment", str(DEMO_CT), "-o", str(tmp_path), "--model", str(fast_bundle), "--progress", "json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = {line["event"] for line in lines}
    assert {"progress", "result"} <= events
    fractions = [line["fraction"] for line in lines if line["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = next(line for line in lines if line["event"] == "result")
    ct = load_volume(DEMO_CT)
    for kind in ("tumor", "probability", "entropy", "mutual_information"):
        out = load_volume(result["outputs"][kind])
        assert out.same_grid(ct, atol=1e-5), kind
    entropy = load_volume(result["outputs"]["entropy"]).array
    assert entropy.min() >= 0 and entropy.max() <= 1
    summary = json.loads((tmp_path / "demo_ct_summary.json").read_text())
    assert summary["info"]["model"] == "pointwise" and summary["info"]["tta_flips"] == 2
    assert nib.load(result["outputs"]["tumor"]).get_data_dtype() == np.uint8


def test_nrrd_output_and_python_m_entry_point(tmp_path, fast_bundle):
    command = [sys.executable, "-m", "LungTumorSegLib", "segment", str(DEMO_CT), "-o", str(tmp_path)]
    completed = subprocess.run(
        [*command, "--model", str(fast_bundle), "--format", "nrrd", "--progress", "none"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert load_volume(tmp_path / "demo_ct_tumor.nrrd").same_grid(load_volume(DEMO_CT), atol=1e-4)


def test_existing_outputs_are_not_overwritten(tmp_path, fast_bundle, capsys):
    args = ["segment", str(DEMO_CT), "-o", str(tmp_path), "--model", str(fast_bundle), "--progress", "none"]
    assert_outputs_kept_unless_overwrite(main, args, tmp_path, capsys)


def test_min_peak_probability_drops_lesions_without_a_confident_voxel(tmp_path, fast_bundle):
    args = ["segment", str(DEMO_CT), "--model", str(fast_bundle), "--progress", "none"]
    assert main([*args, "-o", str(tmp_path / "all"), "--min-peak-probability", "0"]) == 0
    assert main([*args, "-o", str(tmp_path / "sure"), "--min-peak-probability", "1"]) == 0
    every, sure = (json.loads((tmp_path / f / "demo_ct_summary.json").read_text()) for f in ("all", "sure"))
    assert sure["info"]["postprocess"]["min_peak_probability"] == 1.0
    assert every["lesions"]["lesion_count"] > 0 and sure["lesions"]["lesion_count"] < every["lesions"]["lesion_count"]


def _nifti(path, array, zooms=(1.0, 1.0, 1.0)):
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header["pixdim"][1 : 1 + min(3, array.ndim)] = zooms[: array.ndim]
    nib.save(nib.Nifti1Image(array, None, header), path)
    if min(zooms) <= 0:  # nibabel writes 1 for 0: patch the raw header (pixdim[1] at byte 80)
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[80:84] = struct.pack("<f", zooms[0])
        path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _chest_like(shape=(24, 24, 12)):
    rng = np.random.default_rng(0)
    return rng.uniform(-1000, 400, shape).astype(np.float32)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _nifti(d / "flat.nii.gz", _chest_like((32, 32))), "expected a 3D image"),
        (lambda d: _nifti(d / "4d.nii.gz", _chest_like((16, 16, 8, 3))), "expected a 3D image, got 4D"),
        (lambda d: _nifti(d / "nan.nii.gz", np.where(_chest_like() > 300, np.nan, _chest_like())), "NaN"),
        (lambda d: _nifti(d / "zero.nii.gz", _chest_like(), zooms=(0.0, 1.0, 1.0)), "spacing"),
        (lambda d: _nifti(d / "mask.nii.gz", (_chest_like() > 0).astype(np.uint8)), "label map"),
        (lambda d: _nifti(d / "mr.nii.gz", np.abs(_chest_like()) + 100), "no air"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path, fast_bundle, capsys, make, message):
    source = make(tmp_path)
    out = tmp_path / "out"
    assert main(["segment", str(source), "-o", str(out), "--model", str(fast_bundle), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lungtumorseg: error:") and message in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_gzip_and_unwritable_output(tmp_path, fast_bundle, capsys):
    data = shared("lidc-nodule-crops/image/LIDC-IDRI-0001_R_1.nii.gz").read_bytes()
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(data[: len(data) // 3])
    assert main(["segment", str(corrupt), "-o", str(tmp_path / "o"), "--model", str(fast_bundle)]) == 2
    assert "cannot read" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["segment", str(DEMO_CT), "-o", str(blocker / "out"), "--model", str(fast_bundle)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_models_lists_the_bundled_model(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["members"] for row in rows)


def test_missing_cuda_is_a_clear_error(tmp_path, fast_bundle, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["segment", str(DEMO_CT), "-o", str(tmp_path), "--model", str(fast_bundle), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_an_empty_result_says_what_a_miss_can_mean(tmp_path, fast_bundle, capsys):
    args = ["segment", str(DEMO_CT), "-o", str(tmp_path), "--model", str(fast_bundle), "--progress", "none"]
    assert main([*args, "--min-lesion-ml", "100000"]) == 0
    out = capsys.readouterr().out
    assert "0 lesion(s)" in out and "note: no lesion found" in out and "model card" in out
    assert main([*args, "--overwrite"]) == 0
    assert "note: no lesion found" not in capsys.readouterr().out
