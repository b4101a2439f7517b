"""Benchmark: ``measure_lesions`` against a naive baseline, measured in the same run.

Label: 512 x 512 x 300 voxels at 0.7 x 0.7 x 1.0 mm with 10 ellipsoids of various sizes and
orientations. The engine labels on a coarse block grid, measures each lesion on its bounding box and
builds hulls from row-extreme voxel corners only, pruning slices by their extent. The naive baseline
labels the whole volume, scans the whole volume once per lesion (``labels == id``), and builds
convex hulls from the corners of every voxel of every slice and of the whole lesion. Both must
agree on every diameter (checked). Prints best-of-N times and the speed-up.

    PYTHONPATH=LungTumorSeg python Testing/benchmarks/bench_measure.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHAPE = (512, 512, 300)
SPACING = np.array([0.7, 0.7, 1.0])


def make_label(seed: int = 3) -> np.ndarray:
    """Ten ellipsoids (semi-axes 2.5 to 35 mm) rotated about S, well separated, in a 512 x 512 x 300 grid."""
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    centres = [(x, y, z) for x in (90, 256, 420) for y in (90, 256, 420) for z in (80, 220)]
    rng.shuffle(centres)
    for n in range(10):
        semi = np.array([35.0, 22.0, 18.0]) * (1 - n / 11) ** 1.2 + 2.5
        angle = rng.uniform(0, np.pi)
        centre = np.array(centres[n], dtype=float)
        half = np.ceil(semi.max() / SPACING).astype(int) + 1
        lo, hi = (centre - half).astype(int), (centre + half + 1).astype(int)
        grid = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        x, y, z = ((g - c) * s for g, c, s in zip(grid, centre, SPACING))
        u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
        inside = (u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (z / semi[2]) ** 2 <= 1
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= inside.astype(np.uint8)
    return label


def naive_measure(label: np.ndarray, affine: np.ndarray) -> list[tuple[int, float, float]]:
    """Per lesion (voxel count, long axis, 3D max diameter) the straightforward way."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    labels, count = ndimage.label(label > 0.5, structure=np.ones((3, 3, 3)))
    square = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    cube = np.array([[a, b, c] for a in (-0.5, 0.5) for b in (-0.5, 0.5) for c in (-0.5, 0.5)])
    results = []
    for index in range(1, count + 1):
        voxels = np.argwhere(labels == index)  # a full-volume scan per lesion
        long_axis = 0.0
        for k in np.unique(voxels[:, 2]):
            ij = voxels[voxels[:, 2] == k][:, :2]
            corners = ((ij[:, None, :] + square[None]).reshape(-1, 2)) * SPACING[:2]
            hull = corners[ConvexHull(corners).vertices]
            long_axis = max(long_axis, float(pdist(hull).max()))
        corners = (voxels[:, None, :] + cube[None]).reshape(-1, 3) @ affine[:3, :3].T
        hull = corners[ConvexHull(corners).vertices]
        results.append((len(voxels), long_axis, float(pdist(hull).max())))
    return sorted(results, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (the measurement is serial)")
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(args.threads))
    from LungTumorSegLib.core.volume import Volume
    from LungTumorSegLib.measurements.lesion_measurements import measure_lesions

    affine = np.diag([*SPACING, 1.0])
    start = time.perf_counter()
    label = make_label()
    print(f"label {SHAPE} at {tuple(SPACING.tolist())} mm built in {time.perf_counter() - start:.1f} s")
    volume = Volume(label, affine)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        case = measure_lesions(volume)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    naive = naive_measure(label, affine)
    naive_time = time.perf_counter() - start

    engine = sorted(((x.voxel_count, x.long_axis_mm, x.max_diameter_3d_mm) for x in case.lesions), reverse=True)
    assert len(engine) == len(naive) == 10, (len(engine), len(naive))
    for ours, theirs in zip(engine, naive):
        assert ours[0] == theirs[0] and np.allclose(ours[1:], theirs[1:], atol=1e-6), (ours, theirs)
    print(f"{'lesion':>6} {'voxels':>8} {'long mm':>8} {'short mm':>9} {'3D max mm':>10}")
    for lesion in case.lesions:
        print(
            f"{lesion.lesion_id:>6} {lesion.voxel_count:>8} {lesion.long_axis_mm:>8.2f} "
            f"{lesion.short_axis_mm:>9.2f} {lesion.max_diameter_3d_mm:>10.2f}"
        )
    best = min(times)
    print(f"measure_lesions: best of {args.repeats} = {best:.3f} s (all: {', '.join(f'{t:.3f}' for t in times)})")
    print(f"naive baseline (full-volume scans, all-voxel hulls): {naive_time:.3f} s")
    print(f"speed-up: {naive_time / best:.1f}x; results identical (voxel counts, long axes, 3D diameters)")


if __name__ == "__main__":
    main()
