"""Benchmark: the engine's SimpleITK registration against itk-elastix on the real rigid test pair, same run.

The pair is the compare tests' one: LIDC-IDRI-0003 (../shared/data) and the same CT with the patient
moved by 10 mm and 5 degrees about S, resampled on the same grid (``Testing/followup_pairs.py``);
``--hard`` adds a 25 mm / 10 degree pair. Both libraries get the same working images (the engine's lung-field
crop, block-averaged to 2 mm) and the same metric mask; elastix runs its default rigid parameter map
(Euler, Mattes mutual information, adaptive stochastic gradient descent, 3 levels, 256 iterations) and
the same map with 100 iterations. Accuracy is the distance between the true and the estimated position
of every tumour voxel (mean and max, mm); time is the best of ``--repeats`` runs. Prints a table and
the time ratio elastix / SimpleITK.

    python Testing/benchmarks/bench_registration.py [--repeats 3] [--threads 2] [--hard] [--downsample 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "Testing")]

from followup_pairs import LIDC_0003, downsampled_case, resampled_after_move, rigid_move  # noqa: E402

from LungTumorSegLib.core.volume import Volume  # noqa: E402
from LungTumorSegLib.followup.registration import (  # noqa: E402
    RegistrationSettings,
    _metric_mask,
    _working_image,
    register,
    sitk_affine,
)

SHARED = ROOT.parent / "shared" / "data"


def tumour_error(mapping, label: Volume, move: np.ndarray) -> tuple[float, float]:
    """Mean and max distance (mm) between the estimated and the true follow-up position of each tumour voxel."""
    points = label.voxel_to_ras(np.argwhere(label.array > 0))
    truth = points @ move[:3, :3].T + move[:3, 3]
    error = np.linalg.norm(mapping(points) - truth, axis=1)
    return float(error.mean()), float(error.max())


def run_simpleitk(baseline: Volume, followup: Volume) -> tuple[float, callable]:
    """Seconds (without the residual, which elastix does not compute) and the point mapping."""
    tick = time.perf_counter()
    alignment = register(baseline, followup, RegistrationSettings())
    return time.perf_counter() - tick - alignment.residual["seconds"], alignment.to_followup


def run_elastix(baseline: Volume, followup: Volume, iterations: int, threads: int) -> tuple[float, callable]:
    import itk

    tick = time.perf_counter()
    settings = RegistrationSettings()
    fixed, moving = _working_image(baseline, settings), _working_image(followup, settings)
    mask = _metric_mask(fixed, settings.mask_margin_mm)

    def to_itk(image, pixel=np.float32):
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image).astype(pixel)
        out = itk.image_from_array(array)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ sitk_affine(image)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        out.SetSpacing(spacing.tolist())
        out.SetOrigin(lps[:3, 3].tolist())
        out.SetDirection(itk.matrix_from_array(lps[:3, :3] / spacing))
        return out

    parameters = itk.ParameterObject.New()
    rigid = parameters.GetDefaultParameterMap("rigid", 3)
    rigid["MaximumNumberOfIterations"] = [str(iterations)]
    rigid["AutomaticTransformInitialization"] = ["true"]
    rigid["AutomaticTransformInitializationMethod"] = ["CenterOfGravity"]
    rigid["WriteResultImage"] = ["false"]
    parameters.AddParameterMap(rigid)
    method = itk.ElastixRegistrationMethod.New(
        fixed_image=to_itk(fixed.image),
        moving_image=to_itk(moving.image),
        parameter_object=parameters,
        fixed_mask=to_itk(mask, np.uint8),
        log_to_console=False,
    )
    method.SetNumberOfThreads(threads)
    method.Update()
    transform = method.GetCombinationTransform()
    seconds = time.perf_counter() - tick
    flip = np.array([-1.0, -1.0, 1.0])

    def mapping(points: np.ndarray) -> np.ndarray:
        return np.array([transform.TransformPoint(itk.Point[itk.D, 3]((p * flip).tolist())) for p in points]) * flip

    return seconds, mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--hard", action="store_true", help="also a 25 mm / 10 degree move")
    parser.add_argument("--downsample", type=int, default=1, help="in-plane block averaging of the CT (tests use 2)")
    args = parser.parse_args()
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
    baseline, label = downsampled_case(SHARED / LIDC_0003, args.downsample)
    print(f"LIDC-IDRI-0003 {baseline.shape} at {np.round(baseline.spacing, 2)} mm, {args.threads} thread(s)")
    pairs = [("10 mm + 5 deg", rigid_move(baseline))]
    if args.hard:
        pairs.append(("25 mm + 10 deg", rigid_move(baseline, 10.0, np.array([15.0, -12.0, 15.6]))))
    candidates = {
        "SimpleITK (engine)": lambda b, f: run_simpleitk(b, f),
        "itk-elastix, 256 it": lambda b, f: run_elastix(b, f, 256, args.threads),
        "itk-elastix, 100 it": lambda b, f: run_elastix(b, f, 100, args.threads),
    }
    try:
        import itk  # noqa: F401
    except ImportError:
        print("itk-elastix is not installed: pip install itk-elastix (only SimpleITK is measured)")
        candidates = {"SimpleITK (engine)": candidates["SimpleITK (engine)"]}
    print(f"{'pair':<16} {'library':<22} {'best s':>7} {'mean mm':>8} {'max mm':>7}")
    for pair_name, move in pairs:
        followup = resampled_after_move(baseline, move)
        times: dict[str, float] = {}
        for name, run in candidates.items():
            runs = [run(baseline, followup) for _ in range(args.repeats)]
            times[name] = min(seconds for seconds, _ in runs)
            mean, worst = tumour_error(runs[-1][1], label, move)
            print(f"{pair_name:<16} {name:<22} {times[name]:>7.2f} {mean:>8.3f} {worst:>7.3f}")
        for name in list(times)[1:]:
            print(f"{'':<16} time {name} / SimpleITK: {times[name] / times['SimpleITK (engine)']:.2f}x")


if __name__ == "__main__":
    main()
