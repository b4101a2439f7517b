"""Benchmark: the engine's default settings against a naive baseline, measured in the same run.

Default: the bundle's settings (lung-field crop, its overlap and TTA) with the retained heap
(allocator.py). Baselines (same models), chosen with ``--baseline``:

- ``untuned`` (default): the same settings with glibc's allocator defaults
  (``LUNGTUMORSEG_MALLOC_TUNING=0``), i.e. what the engine did before the heap tuning;
- ``naive``: whole-volume sliding window at overlap 0.5 with 8-flip TTA, no lung crop (slow:
  about 8x the default with a SwinUNETR member on CPU).

Each configuration runs in its own process so that peak RAM (ru_maxrss) is its own.
Reports wall time, peak RAM, the speed-up and the agreement of the two outputs.

    python Testing/benchmarks/bench_inference.py [--ct PATH] [--model NAME] [--threads 2] [--baseline naive]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CT = ROOT.parent / "shared" / "data" / "chest-ct" / "nsclc-radiogenomics-R01-001" / "ct.nii.gz"

RUNNER = r"""
import json, resource, sys, time
import numpy as np
from LungTumorSegLib.model.bundle import find_bundle
from LungTumorSegLib.core.device import configure_threads
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.segmentation.pipeline import segment
from LungTumorSegLib.segmentation.options import SegmentOptions
config = json.loads(sys.argv[1])
configure_threads(config.pop("threads"))
out = config.pop("out")
ct = load_volume(config.pop("ct"))
bundle = find_bundle(config.pop("model"))
start = time.perf_counter()
result = segment(ct, bundle, SegmentOptions(device="cpu", **config))
wall = time.perf_counter() - start
np.save(out, result.label.array)
np.save(out.replace(".npy", "_p.npy"), result.probability.array.astype(np.float16))
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(json.dumps({"wall_s": wall, "peak_ram_gb": peak_gb, "info": result.info}))
"""

BASELINES = {
    "untuned": {"env": {"LUNGTUMORSEG_MALLOC_TUNING": "0"}},
    "naive": {"tta": 8, "overlap": 0.5, "crop_to_lung": False},
}


def run(config: dict) -> dict:
    """Run one configuration in a fresh process; returns its timings and peak RAM."""
    env = {**os.environ, **config.pop("env", {})}
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(config)], capture_output=True, text=True, env=env
    )
    if completed.returncode != 0:
        raise SystemExit(completed.stderr)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two labels (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT)
    parser.add_argument("--model", default=None, help="bundle name or folder (default: the default bundle)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", choices=("untuned", "naive"), default="untuned")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = {"ct": str(args.ct), "model": args.model, "threads": args.threads}
        configs = {
            "baseline": {**common, **BASELINES[args.baseline], "out": f"{tmp}/baseline.npy"},
            "default": {**common, "out": f"{tmp}/default.npy"},
        }
        results = {}
        for name, config in configs.items():
            tick = time.perf_counter()
            results[name] = run(config)
            res = results[name]
            print(
                f"{name:>8}: {res['wall_s']:7.1f} s segment, peak RAM {res['peak_ram_gb']:.2f} GB "
                f"({time.perf_counter() - tick:.1f} s with start-up and loading)",
                flush=True,
            )
        agreement = dice(np.load(configs["baseline"]["out"]), np.load(configs["default"]["out"]))
        p_base = np.load(configs["baseline"]["out"].replace(".npy", "_p.npy")).astype(np.float32)
        p_default = np.load(configs["default"]["out"].replace(".npy", "_p.npy")).astype(np.float32)
        soft = {
            "max_abs_probability_difference": float(np.abs(p_base - p_default).max()),
            "dice_at_p_0.1": dice(p_base >= 0.1, p_default >= 0.1),
            "voxels_p_0.1_baseline": int((p_base >= 0.1).sum()),
            "lesion_voxels_baseline": int((np.load(configs["baseline"]["out"]) > 0).sum()),
        }
    speedup = results["baseline"]["wall_s"] / results["default"]["wall_s"]
    summary = {
        "ct": str(args.ct),
        "threads": args.threads,
        "baseline_kind": args.baseline,
        "baseline": results["baseline"],
        "default": results["default"],
        "speedup": speedup,
        "dice_agreement": agreement,
        **soft,
    }
    print(f"speed-up {speedup:.1f}x (default vs baseline), Dice agreement {agreement:.4f}")
    print("probability agreement: " + ", ".join(f"{k} {v:.4g}" for k, v in soft.items()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
