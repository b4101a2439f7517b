"""Benchmark: Re-measure of five lesion segments on a full-resolution CT, against a baseline in the same run.

The R01-001 chest CT of ../shared/data (512 x 512 x 304) in a real MRML scene (slicer-core, Testing/slicer_mrml)
with five box-shaped lesion segments. ``measure_lesion_segments`` (what Re-measure, a seed click and Save report
run) finds each segment's bounding box from its axis projections and reads the CT and the entropy as views of
Slicer's arrays. The baseline does what the first version did: ``np.nonzero`` over each whole (transposed) mask
and a contiguous copy of the CT. Both must give the same measurements (checked). Prints best-of-N times and the
ratio.

    .venv/bin/python Testing/benchmarks/bench_remeasure.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "Testing"), str(ROOT / "LungTumorSeg")]
CT = ROOT.parent / "shared" / "data" / "chest-ct" / "nsclc-radiogenomics-R01-001" / "ct.nii.gz"


def baseline(segmentationNode, inputVolume):
    """The first version: bounding boxes with np.nonzero over each whole mask, the CT copied."""
    from LungTumorSegLib.core.volume import Volume
    from LungTumorSegLib.measurements.lesion_measurements import Component, measure_lesions
    from LungTumorSegLib.slicer_glue import lesion_nodes
    from LungTumorSegLib.slicer_glue import mrml_nodes as nodes

    ids = lesion_nodes.lesion_segment_ids(segmentationNode)
    masks = [lesion_nodes.lesion_mask(segmentationNode, i, inputVolume).transpose(2, 1, 0) for i in ids]
    ct = nodes.volume_from_node(inputVolume)
    components, union = [], np.zeros(masks[0].shape, np.uint8)
    for mask in masks:
        mask = mask > 0
        where = np.nonzero(mask)
        slices = tuple(slice(int(a.min()), int(a.max()) + 1) for a in where)
        components.append(Component(slices, mask[slices]))
        union[slices][mask[slices]] = 1
    return measure_lesions(Volume(union, ct.affine), ct, None, components=components)


def best_of(repeats: int, function) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not CT.is_file():
        print(f"{CT} not found (the shared data)")
        return 2
    from slicer_mrml import MrmlEnvironment

    environment = MrmlEnvironment(Path(tempfile.mkdtemp())).install()
    import slicer

    from LungTumorSegLib.slicer_glue import lesion_nodes
    from LungTumorSegLib.slicer_glue.segmentation_result import measure_lesion_segments

    ct = environment.load_volume(CT)
    labelled = np.zeros(slicer.util.arrayFromVolume(ct).shape, np.uint16)
    for number, (k, j, i) in enumerate(
        [(60, 150, 150), (120, 300, 160), (180, 200, 350), (230, 330, 330), (280, 120, 260)], 1
    ):
        labelled[k : k + 15, j : j + 20, i : i + 20] = number
    segmentation, _ = lesion_nodes.replace_lesion_segments(labelled, 5, ct)
    now, (case, _) = best_of(args.repeats, lambda: measure_lesion_segments(segmentation, ct))
    before, reference = best_of(args.repeats, lambda: baseline(segmentation, ct))
    for mine, theirs in zip(case.lesions, reference.lesions):
        assert mine.voxel_count == theirs.voxel_count and abs(mine.long_axis_mm - theirs.long_axis_mm) < 1e-9
        assert abs((mine.mean_hu or 0) - (theirs.mean_hu or 0)) < 1e-6
    print(f"5 lesion segments on {CT.parent.name} {labelled.shape[::-1]}, best of {args.repeats}:")
    print(f"  baseline (np.nonzero boxes, CT copied): {before:6.2f} s  1.00x")
    print(f"  measure_lesion_segments:                {now:6.2f} s  {before / now:.2f}x faster")
    environment.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
