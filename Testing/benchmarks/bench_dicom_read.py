"""Benchmark: reading a CT series from DICOM, four readers against nibabel on the same CT as NIfTI, same run.

The shared 512 x 512 x 304 CT (NSCLC-Radiogenomics R01-001, ``ct.nii.gz``) is written as a DICOM series
with pydicom (one file per slice, shuffled file names, RescaleIntercept -1024), then read with:

- ``lungtumorseg``: the engine's reader (``LungTumorSegLib.io.dicom_io``: pydicom, slices sorted along the
  normal, per-slice rescale, checks);
- ``highdicom``: ``highdicom.get_volume_from_series`` on the pydicom datasets;
- ``simpleitk``: ``SimpleITK.ImageSeriesReader`` with GDCM's file sorting (``pip install SimpleITK``);
- ``monai``: ``monai.data.PydicomReader``.

Baseline: ``LungTumorSegLib.io.image_io.load_volume`` (nibabel) on the NIfTI, and plain ``nibabel.load``.
Reports best-of-N read times and the ratio to the nibabel baseline.

Correctness on small series cut from the same CT (every 4th voxel in-plane, 40 slices): voxels and the
voxel-to-RAS affine against the truth (after the closest-RAS reorientation, so any slice order is
fine) for a shuffled axial series, InstanceNumbers out of order, an oblique series (rotated 20°), signed
storage with RescaleIntercept 0; and whether each reader refuses a series with a missing slice and a
gantry-tilted series (a reader that silently returns a grid there is wrong).

    PYTHONPATH=LungTumorSeg:Testing python Testing/benchmarks/bench_dicom_read.py [--repeats 3] [--ct PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "Testing")]
DEFAULT_CT = ROOT.parent / "shared" / "data" / "chest-ct" / "nsclc-radiogenomics-R01-001" / "ct.nii.gz"

from dicom_series import downsampled, rotated, tilted, write_ct_series  # noqa: E402

from LungTumorSegLib.core.orientation import Reorientation  # noqa: E402
from LungTumorSegLib.core.volume import Volume  # noqa: E402
from LungTumorSegLib.io.image_io import load_volume  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_lungtumorseg(folder: Path) -> Volume:
    from LungTumorSegLib.io.dicom_io import choose_series, read_ct_series, series_in_folder

    return read_ct_series(choose_series(series_in_folder(folder), folder)).volume


def read_highdicom(folder: Path) -> Volume:
    import highdicom
    import pydicom

    volume = highdicom.get_volume_from_series([pydicom.dcmread(p) for p in sorted(folder.iterdir())], dtype=np.float32)
    # highdicom indexes (frame, row, column); the engine (column, row, frame)
    return Volume(volume.array.transpose(2, 1, 0), LPS_TO_RAS @ volume.affine[:, [2, 1, 0, 3]])


def read_simpleitk(folder: Path) -> Volume:
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # it only warns about missing slices
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0).astype(np.float32)
    return Volume(array, LPS_TO_RAS @ affine)


def read_monai(folder: Path) -> Volume:
    from monai.data import PydicomReader

    reader = PydicomReader()
    array, meta = reader.get_data(reader.read(str(folder)))
    return Volume(np.asarray(array, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64))


READERS: dict[str, Callable[[Path], Volume]] = {
    "lungtumorseg": read_lungtumorseg,
    "highdicom": read_highdicom,
    "simpleitk": read_simpleitk,
    "monai": read_monai,
}


def available(name: str) -> bool:
    module = {"highdicom": "highdicom", "simpleitk": "SimpleITK", "monai": "monai"}.get(name, "pydicom")
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def best_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def agreement(read: Volume, truth: Volume) -> str:
    """'ok', or what differs, after bringing both to their closest RAS axes."""
    a, b = Reorientation.for_volume(read).apply(read), Reorientation.for_volume(truth).apply(truth)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    error = float(np.abs(a.affine - b.affine).max())
    voxels = float(np.abs(np.asarray(a.array, np.float64) - b.array).max())
    if error > 1e-3 or voxels > 0.5:
        return f"WRONG (affine error {error:.3g} mm, voxel error {voxels:g} HU)"
    return "ok"


def correctness(ct: Volume, workdir: Path, readers: list[str]) -> None:
    small = downsampled(Volume(ct.array[:, :, 100:140], ct.affine @ _shift(100)), (4, 4, 1))
    cases = {
        "axial, shuffled files": (small, {}, True),
        "InstanceNumber shuffled": (small, {"instance_order": "shuffled"}, True),
        "oblique (20°)": (rotated(small, 20.0), {}, True),
        "int16, intercept 0": (small, {"intercept": 0.0}, True),
        "missing slice": (small, {"skip_slices": (17,)}, False),
        "gantry tilt 15°": (tilted(small, 15.0), {}, False),
    }
    print(f"\ncorrectness on {small.shape} series (ok = matches the truth; refused = InputError/exception)")
    print(f"{'case':<26}" + "".join(f"{name:>16}" for name in readers))
    for label, (volume, options, readable) in cases.items():
        folder = workdir / label.replace(" ", "_").replace(",", "").replace("°", "")
        write_ct_series(volume, folder, **options)
        row = f"{label:<26}"
        for name in readers:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    read = READERS[name](folder)
                    verdict = agreement(read, volume) if readable else "WRONG (read)"
                except Exception:  # noqa: BLE001 - a refusal is the right answer for the bad cases
                    verdict = "refused" if not readable else "FAILED"
            row += f"{verdict:>16}" if len(verdict) <= 16 else f"  {verdict}"
        print(row)


def _shift(slices: int) -> np.ndarray:
    shift = np.eye(4)
    shift[2, 3] = slices
    return shift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    readers = [name for name in READERS if available(name)]
    missing = [name for name in READERS if name not in readers]
    ct = load_volume(args.ct)
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        folder = Path(tmp) / "series"
        write_ct_series(ct, folder)
        print(f"{args.ct.name}: {ct.shape} voxels, {len(list(folder.iterdir()))} DICOM files; best of {args.repeats}")
        baseline = best_time(lambda: load_volume(args.ct), args.repeats)
        import nibabel as nib

        plain = best_time(lambda: np.asanyarray(nib.load(str(args.ct)).dataobj), args.repeats)
        print(f"{'nibabel (load_volume, float32)':<34}{baseline:7.2f} s   1.00x  (baseline)")
        print(f"{'nibabel (nib.load, stored int16)':<34}{plain:7.2f} s   {plain / baseline:.2f}x")
        for name in readers:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read = READERS[name](folder)
                seconds = best_time(lambda name=name: READERS[name](folder), args.repeats)
            print(f"{name:<34}{seconds:7.2f} s   {seconds / baseline:.2f}x  full CT: {agreement(read, ct)}")
        if missing:
            print(f"not installed: {', '.join(missing)}")
        correctness(ct, Path(tmp), readers)


if __name__ == "__main__":
    main()
