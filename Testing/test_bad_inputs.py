"""Bad and unusual inputs, as a new user gives them: every one is a clear exit code and nothing is lost.

Each case builds its inputs here (tmp_path), runs the command line in-process (``main(argv)``; a real
process only where a signal is needed) and checks three things: the exit code, the message (one line
on stderr naming the file or the option), and what is or is not on disk afterwards. The sections
follow the numbered points of issue 14.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch
from conftest import DEMO_CT, ROOT, make_pointwise_bundle, shared, synthetic_chest
from dicom_series import write_ct_series

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.io.image_names import unique_stems
from LungTumorSegLib.io.input_files import load_ct
from LungTumorSegTrainingLib.cli import main as train_cli

SPACING = (1.5, 1.5, 2.5)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A real pointwise bundle (fast on CPU) at the synthetic chest's spacing."""
    return make_pointwise_bundle(tmp_path_factory.mktemp("models") / "pointwise", spacing=SPACING)


@pytest.fixture(scope="module")
def chest() -> tuple[Volume, np.ndarray]:
    """The synthetic chest phantom with one 8 mm nodule, and its nodule mask."""
    return synthetic_chest(SPACING)


def save_nifti(path: Path, volume: Volume, dtype=np.int16) -> Path:
    """``volume`` as a NIfTI file with the same sform and qform."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume.array).astype(dtype), volume.affine), path)
    return path


def run(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """Run the command line in-process: (exit code, stdout, non-empty stderr lines without progress bars)."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line.split("\r")[-1].strip() for line in captured.err.splitlines()]
    return code, captured.out, [line for line in lines if line]


def segment(inputs: list[Path], out: Path, bundle: Path, *extra: str) -> list[str]:
    return ["segment", *map(str, inputs), "-o", str(out), "--model", str(bundle), "--progress", "none", *extra]


def one_error(lines: list[str], *needles: str) -> str:
    """The single stderr line, an error containing every needle."""
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("lungtumorseg: error:"), lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert "np.float64" not in errors[0] and "Traceback" not in errors[0]
    return errors[0]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


# ---------------------------------------------------------------- 1-4: data loss and leftovers


def test_same_file_names_in_two_folders_get_distinct_stems(tmp_path, bundle, chest, capsys):
    ct, _ = chest
    other = synthetic_chest(SPACING, nodules=(((30.0, 0.0, 0.0), 8.0), ((-30.0, 10.0, 10.0), 6.0)))[0]
    a, b = save_nifti(tmp_path / "a" / "ct.nii.gz", ct), save_nifti(tmp_path / "b" / "ct.nii.gz", other)
    out = tmp_path / "out"
    code, stdout, err = run(segment([a, b], out, bundle, "--overwrite", "--no-pictures"), capsys)
    assert code == 0, err
    assert {"a_ct_tumor.nii.gz", "b_ct_tumor.nii.gz"} <= files_under(out) and "ct_tumor.nii.gz" not in files_under(out)
    lesions = [json.loads((out / f"{s}_summary.json").read_text())["lesions"]["lesion_count"] for s in ("a_ct", "b_ct")]
    assert lesions == [1, 2]  # each case kept its own result
    assert any("outputs named a_ct_*" in line for line in err)


def test_stems_take_as_many_parent_folders_as_needed(tmp_path):
    paths = [tmp_path / "p1" / "x" / "ct.nii.gz", tmp_path / "p2" / "x" / "ct.nii.gz", tmp_path / "other.nrrd"]
    assert unique_stems(paths) == ["p1_x_ct", "p2_x_ct", "other"]


def test_a_file_listed_twice_is_segmented_once(tmp_path, bundle, chest, capsys):
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    out = tmp_path / "out"
    code, stdout, err = run(segment([path, path], out, bundle, "--no-pictures"), capsys)
    assert code == 0 and stdout.count("lesion(s)") == 1
    assert any("listed more than once" in line for line in err)
    assert len([name for name in files_under(out) if name.endswith("_tumor.nii.gz")]) == 1


def test_inputs_no_folder_tells_apart_are_refused_before_any_work(tmp_path, bundle, chest, capsys):
    nifti = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    nrrd.write(
        str(tmp_path / "ct.nrrd"), chest[0].array, {"space": "RAS", "space directions": chest[0].affine[:3, :3].T}
    )
    out = tmp_path / "out"
    code, _, err = run(segment([nifti, tmp_path / "ct.nrrd"], out, bundle), capsys)
    assert code == 2
    one_error(err, "ct.nii.gz", "ct.nrrd", "same outputs")
    assert not out.exists()


def test_overwrite_replaces_the_whole_earlier_set(tmp_path, bundle, chest, capsys):
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    out = tmp_path / "out"
    assert run(segment([path], out, bundle), capsys)[0] == 0
    assert {"ct_overlay.png", "ct_report.html"} <= files_under(out)
    code, stdout, _ = run(segment([path], out, bundle, "--overwrite", "--min-lesion-ml", "1000"), capsys)
    assert code == 0 and "0 lesion(s)" in stdout
    names = files_under(out)
    assert "ct_overlay.png" not in names and "ct_snapshot.png" not in names and "ct_report.html" in names
    code, _, _ = run(segment([path], out, bundle, "--overwrite", "--no-pictures", "--format", "nrrd"), capsys)
    assert code == 0
    names = files_under(out)
    assert "ct_report.html" not in names and "ct_tumor.nii.gz" not in names and "ct_tumor.nrrd" in names


def test_without_overwrite_any_file_of_the_earlier_set_blocks(tmp_path, bundle, chest, capsys):
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    out = tmp_path / "out"
    assert run(segment([path], out, bundle), capsys)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = run(segment([path], out, bundle, "--no-pictures", "--format", "nrrd"), capsys)
    assert code == 2
    one_error(err, "already exist", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_measure_overwrite_removes_stale_pictures(tmp_path, chest, capsys):
    ct, mask = chest
    label, empty = tmp_path / "label.nii.gz", tmp_path / "empty.nii.gz"
    save_nifti(label, ct.with_array(mask.astype(np.uint8)), np.uint8)
    save_nifti(empty, ct.with_array(np.zeros(ct.shape, np.uint8)), np.uint8)
    out = tmp_path / "out"
    common = ["-o", str(out), "--stem", "case", "--snapshot"]
    assert run(["measure", str(label), *common], capsys)[0] == 0
    assert "case_overlay.png" in files_under(out)
    code, stdout, _ = run(["measure", str(empty), *common, "--overwrite"], capsys)
    assert code == 0 and "0 lesion(s)" in stdout
    names = files_under(out)
    assert "case_overlay.png" not in names and "case_snapshot.png" not in names and "case_report.html" in names


def _engine(*args: str, **kwargs) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]),
    }
    command = [sys.executable, "-m", "LungTumorSegLib", *args, "--progress", "json"]
    # a shell's background job inherits SIGINT ignored; give the engine the default a terminal gives it
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=restore, **kwargs
    )


def _cpu_seconds(pid: int) -> float:
    """CPU time a running process has used so far (Linux /proc: utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signal_at(process: subprocess.Popen, step: str, signum: int) -> tuple[list[dict], str, float]:
    """Send ``signum`` when the JSON progress reaches ``step``.

    Returns:
        (events, stderr, CPU seconds the process used after the signal). CPU time, not wall time, so
        that a busy machine that hardly schedules the process does not count as a slow reaction.
    """
    events, cpu_at_signal = [], None
    for line in process.stdout:  # type: ignore[union-attr]
        event = json.loads(line)
        events.append(event)
        if cpu_at_signal is None and event.get("step") == step:
            cpu_at_signal = _cpu_seconds(process.pid)
            process.send_signal(signum)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert cpu_at_signal is not None, events
    return events, process.stderr.read(), usage.ru_utime + usage.ru_stime - cpu_at_signal  # type: ignore[union-attr]


def test_sigterm_while_writing_cancels_and_leaves_nothing(tmp_path, bundle):
    out = tmp_path / "out"
    demo_bundle = make_pointwise_bundle(tmp_path / "models" / "pointwise", spacing=(2.0, 2.0, 3.0))
    process = _engine("segment", str(DEMO_CT), "-o", str(out), "--model", str(demo_bundle))
    events, stderr, _ = _signal_at(process, "write", signal.SIGTERM)
    assert process.returncode == 143, stderr
    assert events[-1] == {"event": "error", "message": "cancelled"}
    assert stderr.strip().splitlines()[-1] == "lungtumorseg: error: cancelled"
    assert not out.exists() or files_under(out) == set()  # no staging folder, no partial files


def test_ctrl_c_during_preprocessing_is_prompt(tmp_path, bundle):
    big = shared("chest-ct/nsclc-radiogenomics-R01-001/ct.nii.gz")  # 512 x 512 x 304: loading takes seconds
    out = tmp_path / "out"
    process = _engine("segment", str(big), "-o", str(out), "--model", str(bundle))
    events, stderr, cpu_after = _signal_at(process, "load", signal.SIGINT)
    assert process.returncode == 130 and "cancelled" in stderr
    assert cpu_after < 2.0, f"worked {cpu_after:.1f} CPU seconds after Ctrl-C before stopping"
    assert not out.exists()


def test_folder_into_itself_skips_its_outputs_and_goes_on_after_a_failure(tmp_path, bundle, chest, capsys):
    folder = tmp_path / "cts"
    save_nifti(folder / "one.nii.gz", chest[0])
    save_nifti(folder / "three.nii.gz", chest[0])
    (folder / "two.nii.gz").write_bytes(gzip.compress(b"not a nifti file at all" * 100))
    args = segment([folder], folder, bundle, "--no-pictures")
    code, stdout, err = run(args, capsys)
    assert code == 2
    assert stdout.count("lesion(s)") == 2 and {"one_tumor.nii.gz", "three_tumor.nii.gz"} <= files_under(folder)
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 2 and "two.nii.gz" in errors[0] and "cannot read" in errors[0]
    assert "1 of 3 cases failed (two.nii.gz)" in errors[1]
    code, stdout, err = run([*args, "--overwrite"], capsys)  # the outputs now in the folder are not inputs
    assert code == 2 and stdout.count("lesion(s)") == 2
    assert not any("_tumor_" in name for name in files_under(folder))
    assert any("skipped 10 output file(s)" in line for line in err)  # 5 maps of 2 cases


def test_a_dicom_folder_into_itself_skips_its_seg_and_sr(tmp_path, bundle, chest, capsys):
    folder = tmp_path / "series"
    write_ct_series(chest[0], folder)
    slices = files_under(folder)
    args = segment([folder], folder, bundle, "--no-pictures")
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    outputs = files_under(folder) - slices
    assert {"series_tumor.nii.gz", "series.seg.nrrd", "series_seg.dcm", "series_sr.dcm"} <= outputs
    code, _, err = run(args, capsys)  # the DICOM SEG and SR of the first run block a second one
    assert code == 2
    one_error(err, "already exist", "--overwrite")
    code, stdout, err = run([*args, "--overwrite"], capsys)  # and are not read as series of the folder
    assert code == 0 and stdout.count("lesion(s)") == 1, err
    assert not any("also found" in line or "SEG" in line for line in err), err
    assert files_under(folder) == slices | outputs


def test_an_output_folder_inside_a_dicom_tree_is_not_searched(tmp_path, bundle, chest, capsys):
    root = tmp_path / "export"
    write_ct_series(chest[0], root / "patient1" / "ct")
    out = root / "results"
    args = segment([root], out, bundle, "--no-pictures")
    assert run(args, capsys)[0] == 0
    assert {"patient1_ct_seg.dcm", "patient1_ct_sr.dcm"} <= files_under(out)
    code, stdout, err = run([*args, "--overwrite"], capsys)
    assert code == 0 and stdout.count("lesion(s)") == 1, err
    assert not any("results" in line and "skipped" in line for line in err), err


# ---------------------------------------------------------------- 5-6: bounded memory and time


def test_a_field_of_view_no_ct_has_is_refused_at_once(tmp_path, bundle, capsys):
    array = np.full((80, 80, 55), -1000, np.int16)
    array[20:60, 20:60, 10:45] = 40
    path = save_nifti(tmp_path / "wide.nii.gz", Volume(array, np.diag([10.0, 10.0, 10.0, 1.0])))
    start = time.perf_counter()
    code, _, err = run(segment([path], tmp_path / "out", bundle), capsys)
    assert code == 2 and time.perf_counter() - start < 5
    one_error(err, "wide.nii.gz", "field of view 800 x 800 x 550 mm", "voxel spacing (10, 10, 10)")
    assert not (tmp_path / "out").exists()


def test_a_model_grid_beyond_the_limit_is_refused_before_allocating(tmp_path, chest, capsys):
    fine = make_pointwise_bundle(tmp_path / "models" / "fine", spacing=(0.2, 0.2, 0.2))
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    code, _, err = run(segment([path], tmp_path / "out", fine, "--no-lung-crop"), capsys)
    assert code == 2
    one_error(err, "ct.nii.gz", "model grid would be 720 x 720 x 600 voxels", "limit 128 million", "--point")
    assert not (tmp_path / "out").exists()


def test_the_memory_estimate_is_checked_against_the_documented_limit(tmp_path, bundle, chest, capsys, monkeypatch):
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    monkeypatch.setenv("LUNGTUMORSEG_MAX_MEMORY_GB", "0.5")
    code, _, err = run(segment([path], tmp_path / "out", bundle), capsys)
    assert code == 2
    one_error(err, "ct.nii.gz", "of memory, more than the limit of 0.5 GB", "LUNGTUMORSEG_MAX_MEMORY_GB")
    assert not (tmp_path / "out").exists()


def test_an_all_zero_volume_is_refused_on_its_stored_type(tmp_path, bundle, capsys):
    shape = (512, 512, 128)
    path = save_nifti(tmp_path / "zeros.nii.gz", Volume(np.zeros(shape, np.int16), np.diag([0.8, 0.8, 1.0, 1.0])))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="label map"):
            load_ct(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stored, as_float = math.prod(shape) * 2, math.prod(shape) * 4
    assert peak < 1.5 * stored < as_float  # one int16 copy (read in blocks), never the float32 one
    code, _, err = run(segment([path], tmp_path / "out", bundle), capsys)
    assert code == 2
    one_error(err, "zeros.nii.gz", "looks like a label map")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 7-8: options and odd files are rc 2


def test_an_rgb_nifti_is_a_clear_error(tmp_path, bundle, capsys):
    rgb = np.zeros((16, 16, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    code, _, err = run(segment([path], tmp_path / "out", bundle), capsys)
    assert code == 2
    one_error(err, "rgb.nii.gz", "voxel type RGB24 is not a scalar image")
    assert not (tmp_path / "out").exists()


OPTION_CASES = [
    (["--point", "nan", "nan", "nan"], "--point nan nan nan"),
    (["--overlap", "1.5"], "--overlap 1.5"),
    (["--overlap", "-0.5"], "--overlap -0.5"),
    (["--overlap", "0.95"], "--overlap 0.95"),
    (["--roi-mm", "-5", "--point", "0", "0", "0"], "--roi-mm -5"),
    (["--roi-mm", "0", "--point", "0", "0", "0"], "--roi-mm 0"),
    (["--threads", "-3"], "--threads -3"),
    (["--min-lesion-ml", "-1"], "--min-lesion-ml -1"),
    (["--threshold", "2"], "--threshold 2"),
    (["--min-peak-probability", "1.5"], "--min-peak-probability 1.5"),
]


@pytest.mark.parametrize(("extra", "message"), OPTION_CASES, ids=[m for _, m in OPTION_CASES])
def test_segment_options_are_checked_before_anything_is_loaded(tmp_path, capsys, extra, message):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b broken")
    argv = segment([corrupt], tmp_path / "out", tmp_path / "no-such-model", *extra)
    code, _, err = run(argv, capsys)
    assert code == 2  # the option is named: neither the corrupt CT nor the missing model was touched
    one_error(err, message, "must be")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--tolerance-mm", "-1"], "--tolerance-mm -1"), (["--detection-threshold", "2"], "--detection-threshold 2")],
)
def test_evaluate_options_are_checked_first(tmp_path, capsys, extra, message):
    code, _, err = run(["evaluate", str(tmp_path / "missing.nii.gz"), str(tmp_path / "gt.nii.gz"), *extra], capsys)
    assert code == 2
    one_error(err, message, "must be")
    assert files_under(tmp_path) == set()


def test_a_manifest_with_a_wrong_type_is_a_bundle_error(tmp_path, bundle, chest, capsys):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["input"]["spacing_mm"] = "abc"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    code, _, err = run(segment([path], tmp_path / "out", broken), capsys)
    assert code == 2
    one_error(err, "manifest.json", "input.spacing_mm must be 3 number(s), got 'abc'")
    assert not (tmp_path / "out").exists()


def test_pickled_weights_are_one_line(tmp_path, bundle, chest, capsys):
    evil = tmp_path / "evil-model"
    evil.mkdir()
    weights = evil / "pointwise0.pt"
    torch.save({"weight": torch.zeros(1), "payload": print}, weights)  # a global torch refuses to unpickle
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["members"][0].update(
        file=weights.name, sha256=__import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    )
    (evil / "manifest.json").write_text(json.dumps(manifest))
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    code, _, err = run(segment([path], tmp_path / "out", evil), capsys)
    assert code == 2 and len(err) == 1
    one_error(err, "pointwise0.pt", "cannot load weights safely", "pickled Python objects")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 9-11: measure/evaluate inputs, stems, models


@pytest.fixture
def labelled(tmp_path, chest) -> dict[str, Path]:
    """The phantom CT, its nodule label, a NaN label and a shifted-origin CT, as files."""
    ct, mask = chest
    nan = mask.astype(np.float32)
    nan[0, 0, 0] = np.nan
    shifted = Volume(ct.array, ct.affine.copy())
    shifted.affine[:3, 3] += (5.0, 0.0, 0.0)
    return {
        "ct": save_nifti(tmp_path / "ct.nii.gz", ct),
        "label": save_nifti(tmp_path / "label.nii.gz", ct.with_array(mask.astype(np.uint8)), np.uint8),
        "nan": save_nifti(tmp_path / "nan.nii.gz", ct.with_array(nan), np.float32),
        "shifted": save_nifti(tmp_path / "shifted.nii.gz", shifted),
    }


MEASURE_CASES = [
    (["measure", "{ct}"], "ct.nii.gz", "not a label map", "looks like a CT"),
    (["measure", "{nan}"], "nan.nii.gz", "NaN"),
    (["measure", "{label}", "--ct", "{label}"], "label.nii.gz", "looks like a label map", "given as the CT"),
    (["measure", "{label}", "--ct", "{shifted}"], "shifted.nii.gz", "origin", "shifted by 5 mm"),
    (["measure", "{label}", "--entropy", "{ct}"], "ct.nii.gz", "not an entropy map"),
    (["evaluate", "{ct}", "{label}"], "ct.nii.gz", "not a label map", "given as the prediction"),
    (["evaluate", "{label}", "{nan}"], "nan.nii.gz", "NaN", "given as the ground truth"),
    (["measure", "{label}", "--stem", "../../x"], "--stem '../../x'", "without folders"),
    (["measure", "{label}", "--stem", "/tmp/x"], "--stem '/tmp/x'", "without folders"),
    (["evaluate", "{label}", "{label}", "--stem", "a/b"], "--stem 'a/b'", "without folders"),
]


@pytest.mark.parametrize("case", MEASURE_CASES, ids=[" ".join(c[0]) + " " + c[1] for c in MEASURE_CASES])
def test_measure_and_evaluate_check_their_inputs(tmp_path, labelled, capsys, case):
    argv, *needles = case
    argv = [part.format(**{k: str(v) for k, v in labelled.items()}) for part in argv] + ["-o", str(tmp_path / "out")]
    before = files_under(tmp_path.parent)
    code, _, err = run(argv, capsys)
    assert code == 2
    one_error(err, *needles)
    assert files_under(tmp_path.parent) == before  # nothing written anywhere, no empty -o folder


def test_measure_takes_a_label_whose_axes_are_flipped(tmp_path, labelled, capsys):
    label = load_volume(labelled["label"], dtype=None)
    flipped = Volume(
        label.array[::-1].copy(),
        label.affine @ np.array([[-1, 0, 0, label.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
    )
    path = save_nifti(tmp_path / "flipped.nii.gz", flipped, np.uint8)
    code, out, err = run(["measure", str(path), "--ct", str(labelled["ct"]), "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err
    plain = run(["measure", str(labelled["label"]), "--ct", str(labelled["ct"]), "-o", str(tmp_path / "p")], capsys)
    flipped_case = json.loads((tmp_path / "o" / "flipped_measurements.json").read_text())["case"]
    plain_case = json.loads((tmp_path / "p" / "label_measurements.json").read_text())["case"]
    assert plain[0] == 0 and flipped_case["total_volume_ml"] == pytest.approx(plain_case["total_volume_ml"])
    assert flipped_case["lesion_count"] == 1


def test_models_lists_the_good_bundles_and_names_the_broken_one(tmp_path, capsys, monkeypatch):
    user = tmp_path / "models"
    (user / "broken").mkdir(parents=True)
    (user / "broken" / "manifest.json").write_text("{not json")
    monkeypatch.setenv("LUNGTUMORSEG_MODELS", str(user))
    code, out, err = run(["models", "--json"], capsys)
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["lungtumorseg-ensemble"]["members"] and "invalid JSON" in rows["broken"]["error"]
    assert len(err) == 1 and "bundle broken skipped" in err[0] and "manifest.json" in err[0]
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "lungtumorseg-ensemble" in out and "broken [broken:" in out


# ---------------------------------------------------------------- 12: messages


def test_an_output_path_that_is_a_file(tmp_path, bundle, chest, capsys):
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    blocker = tmp_path / "results"
    blocker.write_text("a file")
    code, _, err = run(segment([path], blocker, bundle), capsys)
    assert code == 2
    one_error(err, "results: the output folder is a file, not a folder")
    assert blocker.read_text() == "a file"


def test_errors_after_loading_name_the_file_and_print_plain_numbers(tmp_path, bundle, chest, capsys):
    path = save_nifti(tmp_path / "ct.nii.gz", chest[0])
    code, _, err = run(segment([path], tmp_path / "deep" / "out", bundle, "--point", "500", "0", "0"), capsys)
    assert code == 2
    one_error(err, f"{path}: seed point (500.0, 0.0, 0.0) (RAS mm) lies outside the image")
    assert not (tmp_path / "deep").exists()  # the new, empty output folders are removed again


def test_nibabel_header_fixes_are_shown_once_naming_the_file(tmp_path, bundle, chest, capfd):
    path = save_nifti(tmp_path / "negative.nii.gz", chest[0])
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[80:84] = struct.pack("<f", -SPACING[0])  # pixdim[1] < 0: nibabel fixes it and logs at level 35
    path.write_bytes(gzip.compress(bytes(raw)))
    assert main(segment([path], tmp_path / "out", bundle, "--no-pictures")) == 0
    fixes = [line for line in capfd.readouterr().err.splitlines() if "pixdim" in line]
    assert fixes == [f"warning: {path}: pixdim[1,2,3] should be positive; setting to abs of pixdim values"]


# ---------------------------------------------------------------- 13: geometry


def _with_transforms(path: Path, volume: Volume, sform: np.ndarray, qform: np.ndarray) -> Path:
    image = nib.Nifti1Image(volume.array.astype(np.int16), sform)
    image.header.set_sform(sform, code=1)
    image.header.set_qform(qform, code=1)
    nib.save(image, path)
    return path


@pytest.mark.parametrize("kind", ["disagree", "shear"])
def test_geometry_warnings_and_outputs_that_line_up_in_any_viewer(tmp_path, bundle, chest, capsys, kind):
    ct = chest[0]
    sform, qform = ct.affine.copy(), ct.affine.copy()
    if kind == "disagree":
        qform[:3, 3] += (5.0, 0.0, 0.0)
    else:
        sform[0, 2] = SPACING[2] * np.tan(np.radians(10.0))  # a 10-degree gantry tilt
    path = _with_transforms(tmp_path / f"{kind}.nii.gz", ct, sform, qform)
    code, _, err = run(segment([path], tmp_path / "out", bundle, "--no-pictures"), capsys)
    assert code == 0
    warnings = [line for line in err if "warning" in line]
    expected = "the sform and the qform disagree" if kind == "disagree" else "sheared by 10.00 degrees"
    assert len(warnings) == 1 and expected in warnings[0] and f"{kind}.nii.gz" in warnings[0], err
    assert "uses the sform" in warnings[0]
    source, output = nib.load(path), nib.load(tmp_path / "out" / f"{kind}_tumor.nii.gz")
    assert np.allclose(source.get_sform(), output.get_sform()) and np.allclose(source.get_qform(), output.get_qform())
    sitk = pytest.importorskip("SimpleITK")  # ITK, Slicer's reader: a rigid sform, else the qform
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    a, b = sitk.ReadImage(str(path)), sitk.ReadImage(str(tmp_path / "out" / f"{kind}_tumor.nii.gz"))
    assert np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection())
    assert np.allclose(a.GetSpacing(), b.GetSpacing())


def test_misnamed_compression_and_spacings_only_nrrd_load(tmp_path, bundle, chest, capsys):
    ct = chest[0]
    packed = save_nifti(tmp_path / "packed.nii.gz", ct)
    (tmp_path / "gz_named.nii").write_bytes(packed.read_bytes())
    (tmp_path / "plain_named.nii.gz").write_bytes(gzip.decompress(packed.read_bytes()))
    # with 'spacings' only, the axes are read as LPS (ITK's convention): flip R and A to keep the anatomy
    nrrd.write(str(tmp_path / "spacings.nrrd"), ct.array[::-1, ::-1].astype(np.int16), {"spacings": list(SPACING)})
    inputs = [tmp_path / "gz_named.nii", tmp_path / "plain_named.nii.gz", tmp_path / "spacings.nrrd"]
    code, stdout, err = run(segment(inputs, tmp_path / "out", bundle, "--no-pictures"), capsys)
    assert code == 0, err
    assert stdout.count("1 lesion(s)") == 3
    assert any("gzip-compressed although named .nii" in line for line in err)
    assert any("'spacings' but no orientation: assuming LPS axes" in line for line in err)
    reference = load_volume(packed)
    assert np.array_equal(load_volume(tmp_path / "gz_named.nii").array, reference.array)
    assert np.array_equal(load_volume(tmp_path / "plain_named.nii.gz").array, reference.array)


# ---------------------------------------------------------------- 14: training data


def test_prepare_refuses_labels_that_are_all_empty(tmp_path, chest, capsys):
    images, labels = tmp_path / "image", tmp_path / "mask"
    for index in range(3):
        save_nifti(images / f"lung_00{index}.nii.gz", chest[0])
        save_nifti(labels / f"lung_00{index}.nii.gz", chest[0].with_array(np.zeros(chest[0].shape)), np.uint8)
    before = files_under(tmp_path)
    split, task = tmp_path / "split.json", tmp_path / "Task100"
    args = ["--split-out", str(split), "--msd-out", str(task), "--progress", "none"]
    code = train_cli.main(["prepare", "--data", str(images), str(labels), *args])
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines() if line.split("\r")[-1].strip()]
    assert code == 2
    assert len(err) == 1 and "every label is empty" in err[0] and "lung_000.nii.gz" in err[0], err
    assert files_under(tmp_path) == before  # no split file, no task folder


def test_prepare_says_a_fraction_is_out_of_range(tmp_path, capsys):
    args = ["prepare", "--data", str(tmp_path), "--split-out", str(tmp_path / "split.json"), "--val-fraction", "1.5"]
    code = train_cli.main([*args, "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--val-fraction 1.5 is out of range" in err[0]
    assert not (tmp_path / "split.json").exists()
