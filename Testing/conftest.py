"""Shared fixtures: the real data folder, synthetic CTs with known answers, and pointwise bundles."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nibabel import orientations as ornt
from slicer_mrml.fixtures import (  # noqa: F401 - real-MRML fixtures
    logic,
    mrml,
    nodule,
    recorded_box_run,
    recorded_nodule_run,
    recorded_seed_run,
)

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.model.bundle_writer import MemberWeights, write_bundle
from LungTumorSegLib.model.networks import build_network

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_CT = ROOT / "LungTumorSeg" / "Resources" / "Sample" / "demo_ct.nii.gz"
DEMO_GTV = ROOT / "LungTumorSeg" / "Resources" / "Sample" / "demo_ct_gtv.nii.gz"
DEMO_NODULE = ROOT / "LungTumorSeg" / "Resources" / "Sample" / "demo_nodule.nii.gz"
DEMO_NODULE_MASK = ROOT / "LungTumorSeg" / "Resources" / "Sample" / "demo_nodule_mask.nii.gz"
HU_WINDOW = (-1000.0, 400.0)
NODULE_HU, BODY_HU, LUNG_HU = 300.0, 30.0, -800.0
# threshold between body (30 HU) and nodule (300 HU), in window-scaled units
POINTWISE_CENTRE = (165.0 - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
POINTWISE_KWARGS = {
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 4],
    "strides": [1],
    "kernel_size": 1,
    "up_kernel_size": 1,
    "num_res_units": 0,
    "act": None,
    "norm": None,
}


@pytest.fixture(scope="session")
def placeholder_bundle(tmp_path_factory) -> Path:
    """An untrained UNet + SwinUNETR bundle made by scripts/make_demo_bundle.py (real code path)."""
    out = tmp_path_factory.mktemp("placeholder") / "lungtumorseg-placeholder"
    script = ROOT / "scripts" / "make_demo_bundle.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
    return out


def shared(relative: str) -> Path:
    """A path in ../shared/data, skipping the test when the data is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def pointwise_state(steepness: float = 40.0, centre: float = POINTWISE_CENTRE) -> dict[str, torch.Tensor]:
    """Weights making the 1x1x1 UNet compute logit1 - logit0 = steepness * (x - centre) at every voxel."""
    network = build_network("UNet", POINTWISE_KWARGS)
    state = {key: torch.zeros_like(value) for key, value in network.state_dict().items()}
    state["model.0.conv.weight"][0, 0] = 1.0  # channel 0 carries x
    state["model.2.conv.weight"][0, 1] = steepness  # transposed conv: (in, out, ...)
    state["model.2.conv.bias"][1] = -steepness * centre
    return state


def pointwise_probability(hu: np.ndarray, steepness: float = 40.0, centre: float = POINTWISE_CENTRE) -> np.ndarray:
    """What the pointwise bundle predicts for HU values, computed directly."""
    x = np.clip((hu - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0]), 0, 1)
    return 1.0 / (1.0 + np.exp(-steepness * (x - centre)))


def make_pointwise_bundle(
    path: Path,
    spacing: tuple[float, float, float],
    centres: tuple[float, ...] = (POINTWISE_CENTRE,),
    weights: tuple[float, ...] = (1.0,),
    patch: tuple[int, int, int] = (32, 32, 32),
    tta: int = 1,
    min_lesion_ml: float = 0.01,
) -> Path:
    """A real bundle of pointwise UNet members (one per centre) with known outputs."""
    members = [
        MemberWeights(f"pointwise{i}", "UNet", POINTWISE_KWARGS, pointwise_state(centre=c), w)
        for i, (c, w) in enumerate(zip(centres, weights))
    ]
    manifest = {
        "name": path.name,
        "version": "test",
        "input": {
            "spacing_mm": list(spacing),
            "hu_window": list(HU_WINDOW),
            "patch_size": list(patch),
            "overlap": 0.25,
        },
        "output": {"threshold": 0.5, "min_lesion_ml": min_lesion_ml, "restrict_to_lung": True},
        "tta": {"flips": tta},
    }
    return write_bundle(path, manifest, members, fp16=False)


def synthetic_chest(
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.5),
    shape: tuple[int, int, int] = (96, 96, 48),
    nodules: tuple[tuple[tuple[float, float, float], float], ...] = (((-30.0, 0.0, 0.0), 8.0),),
) -> tuple[Volume, np.ndarray]:
    """A RAS-aligned chest phantom: body, two lungs, spherical nodules (centre RAS mm, radius mm).

    Returns the CT Volume and the boolean nodule mask.
    """
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(spacing)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    ras = grid @ affine[:3, :3].T + affine[:3, 3]
    r, a, s = ras[..., 0], ras[..., 1], ras[..., 2]
    ct = np.full(shape, -1000.0, dtype=np.float32)
    ct[(r / 65) ** 2 + (a / 55) ** 2 <= 1] = BODY_HU
    for side in (-1, 1):
        ct[((r - side * 30) / 25) ** 2 + (a / 40) ** 2 + (s / 50) ** 2 <= 1] = LUNG_HU
    mask = np.zeros(shape, bool)
    for centre, radius in nodules:
        sphere = np.sum((ras - np.array(centre)) ** 2, axis=-1) <= radius**2
        mask |= sphere
    ct[mask] = NODULE_HU
    return Volume(ct, affine), mask


def reoriented(volume: Volume, codes: str) -> Volume:
    """The same image stored with voxel axes ``codes`` (e.g. "LPS", "SLP"): same physical content."""
    transform = ornt.ornt_transform(ornt.io_orientation(volume.affine), ornt.axcodes2ornt(tuple(codes)))
    array = np.ascontiguousarray(ornt.apply_orientation(volume.array, transform))
    return Volume(array, volume.affine @ ornt.inv_ornt_aff(transform, volume.shape))


def sphere_volume_ml(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


def assert_outputs_kept_unless_overwrite(main, args: list[str], out_dir: Path, capsys) -> None:
    """Run ``main(args)`` twice: the second run refuses (exit 2) and touches nothing; ``--overwrite`` then runs."""
    assert main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    assert main(args) == 2
    assert "already exist" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before
    assert main([*args, "--overwrite"]) == 0
