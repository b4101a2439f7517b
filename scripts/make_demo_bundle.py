"""Create a placeholder bundle (untrained, tiny UNet + SwinUNETR): every pipeline code path, no training.

The placeholder exercises every code path (checksums, ensemble, TTA, entropy) but its
weights are random: its segmentations mean nothing. Tests use it; the product ships the trained
bundle (LungTumorSeg/Resources/Models/lungtumorseg-ensemble).

    python scripts/make_demo_bundle.py --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LungTumorSeg"))

from LungTumorSegLib.model.bundle_writer import MemberWeights, write_bundle  # noqa: E402
from LungTumorSegLib.model.networks import build_network  # noqa: E402

UNET = {
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32, 64],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "norm": "instance",
}
SWIN = {
    "in_channels": 1,
    "out_channels": 2,
    "feature_size": 12,
    "depths": [1, 1, 1, 1],
    "num_heads": [3, 6, 12, 24],
    "norm_name": "instance",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to create")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    members = [
        MemberWeights("unet", "UNet", UNET, build_network("UNet", UNET).state_dict(), 0.5),
        MemberWeights("swinunetr", "SwinUNETR", SWIN, build_network("SwinUNETR", SWIN).state_dict(), 0.5),
    ]
    manifest = {
        "name": "lungtumorseg-demo",
        "version": "0.0.1",
        "placeholder": True,
        "task": "lung tumour segmentation (binary)",
        "description": "PLACEHOLDER with random weights: exercises the pipeline, segments nothing meaningful.",
        "licence": "Apache-2.0",
        "training": {"data": "none (random initialisation, seed 0)", "command": "python scripts/make_demo_bundle.py"},
        "metrics": {},
        "input": {
            "spacing_mm": [1.5, 1.5, 2.0],
            "orientation": "RAS",
            "hu_window": [-1000, 400],
            "patch_size": [64, 64, 32],
            "overlap": 0.25,
        },
        "output": {
            "classes": ["background", "tumour"],
            "activation": "softmax",
            "threshold": 0.5,
            "min_lesion_ml": 0.1,
            "restrict_to_lung": True,
            "keep_largest": False,
        },
        "tta": {"flips": 2},
    }
    path = write_bundle(args.out, manifest, members, fp16=True, overwrite=args.overwrite)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
