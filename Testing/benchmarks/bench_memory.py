"""Benchmark: peak memory of whole ``segment`` runs against the estimate the engine refuses runs by.

``core.memory_limits.estimated_peak_bytes`` estimates a case's peak memory from the voxels of the input grid,
the cropped region and the model grid (``BYTES_PER_*`` constants, plus ``BASE_BYTES``). This script
runs ``lungtumorseg segment`` in a fresh process per configuration, each loading more on one of the
three terms, and reports the measured peak RSS (``wait4``'s ru_maxrss) beside the estimate. The
estimate must stay at or above the measurement (ratio >= 1) and not far above it.

Configurations (all on CPU):

- ``nodule``: the demo nodule with the bundled model (the fixed cost: torch, MONAI, the networks);
- ``chest-model``: the demo chest CT with a pointwise bundle at the bundled model's spacing (model grid);
- ``chest-fine``: the same with a finer model spacing (a larger model grid);
- ``r01-point``: the 512 x 512 x 304 R01-001 CT with a seed point (the input grid dominates).

    python Testing/benchmarks/bench_memory.py [--threads 2] [--only nodule chest-model ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining"), str(ROOT / "Testing")]

from conftest import DEMO_CT, DEMO_NODULE, make_pointwise_bundle  # noqa: E402

from LungTumorSegLib.core.memory_limits import estimated_peak_bytes  # noqa: E402
from LungTumorSegLib.io.image_io import read_header  # noqa: E402

R01 = ROOT.parent / "shared" / "data" / "chest-ct" / "nsclc-radiogenomics-R01-001" / "ct.nii.gz"


def peak_of(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``; return its peak RSS in bytes (raises on a non-zero exit)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    out, err = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{err[-2000:]}\n{out[-2000:]}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="run only these configurations")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    coarse = make_pointwise_bundle(work / "pointwise-coarse", spacing=(1.0, 1.0, 1.5), patch=(96, 96, 64))
    fine = make_pointwise_bundle(work / "pointwise-fine", spacing=(0.7, 0.7, 1.0), patch=(96, 96, 64))
    centre = ["0", "0", "0"]
    if R01.exists():
        header = read_header(R01)
        centre = [f"{v:.1f}" for v in header.affine[:3, :3] @ (np.array(header.shape) / 2) + header.affine[:3, 3]]
    configs = {
        "nodule": [str(DEMO_NODULE)],
        "chest-model": [str(DEMO_CT), "--model", str(coarse)],
        "chest-fine": [str(DEMO_CT), "--model", str(fine)],
        "r01-point": [str(R01), "--model", str(coarse), "--point", *centre],
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2]), "OMP_NUM_THREADS": str(args.threads)}
    print(f"{'configuration':<12} {'input':>12} {'region':>12} {'model grid':>12} {'peak GB':>8} {'estimate':>8} ratio")
    for name, extra in configs.items():
        if args.only and name not in args.only:
            continue
        if name == "r01-point" and not R01.exists():
            print(f"{name:<12} skipped: {R01} missing")
            continue
        out = work / name
        command = [sys.executable, "-m", "LungTumorSegLib", "segment", *extra, "-o", str(out), "--progress", "none"]
        peak = peak_of([*command, "--device", "cpu", "--threads", str(args.threads)], env)
        summary = json.loads(next(out.glob("*_summary.json")).read_text())
        image = summary["shape"][0] * summary["shape"][1] * summary["shape"][2]
        region = 1
        for start, stop in summary["info"]["region_voxels"]:
            region *= stop - start
        grid = summary["info"]["model_grid"]
        model = grid[0] * grid[1] * grid[2]
        estimate = estimated_peak_bytes(image, region, model)
        print(
            f"{name:<12} {image / 1e6:>10.1f} M {region / 1e6:>10.1f} M {model / 1e6:>10.1f} M "
            f"{peak / 2**30:>8.2f} {estimate / 2**30:>8.2f} {estimate / peak:.2f}"
        )


if __name__ == "__main__":
    main()
