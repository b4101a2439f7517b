"""Benchmark: how fast and how lean a bad CT is refused, against the float32-first baseline in the same run.

The input is an all-zero int16 volume (default 1024 x 1024 x 600 at 0.5 mm, a gzipped NIfTI of about
1 MB that holds 1.2 GB of voxels): not a CT, so it must be refused. Each way runs in its own process
so that its peak RSS (``wait4``'s ru_maxrss) is its own:

- ``baseline``: what the engine did before: ``load_volume`` (float32 copy), then ``validate_ct``;
- ``checked``: ``input_files.load_ct``: header checks, then the values in their stored type, the
  gzip stream decompressed in blocks straight into one array, no float32 copy.

    python Testing/benchmarks/bench_refusal.py [--shape 1024 1024 600] [--spacing 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = r"""
import json, sys, time
from LungTumorSegLib.core.errors import InputError
path, way = sys.argv[1], sys.argv[2]
start = time.perf_counter()
try:
    if way == "baseline":
        from LungTumorSegLib.io.image_io import load_volume
        from LungTumorSegLib.io.validation import validate_ct
        validate_ct(load_volume(path), path)
    else:
        from LungTumorSegLib.io.input_files import load_ct
        load_ct(path)
    message = "accepted"
except InputError as exc:
    message = str(exc)
print(json.dumps({"seconds": time.perf_counter() - start, "message": message}))
"""


def measure(path: Path, way: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path), way], env=env, stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{way} failed")
    return {**json.loads(process.stdout.read()), "peak_gb": usage.ru_maxrss / 2**20}  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[1024, 1024, 600])
    parser.add_argument("--spacing", type=float, default=0.5)
    args = parser.parse_args()
    import nibabel as nib
    import numpy as np

    folder = Path(tempfile.mkdtemp(prefix="bench-refusal-"))
    path = folder / "zeros.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(args.shape, np.int16), np.diag([args.spacing] * 3 + [1.0])), path)
    print(f"{path.name}: {' x '.join(map(str, args.shape))} int16, {path.stat().st_size / 2**20:.1f} MB on disk")
    results = {way: measure(path, way) for way in ("baseline", "checked")}
    for way, result in results.items():
        print(f"{way:<9} {result['seconds']:6.2f} s  peak {result['peak_gb']:5.2f} GB  {result['message']}")
    base, new = results["baseline"], results["checked"]
    speed, memory = base["seconds"] / new["seconds"], base["peak_gb"] / new["peak_gb"]
    print(f"checked vs baseline: {speed:.1f}x faster, {memory:.1f}x less memory")
    path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
