"""The demo samples as Slicer Sample Data sources (no slicer import: the module passes these to
``SampleData.SampleDataLogic.registerCustomSampleDataSource``, whose keywords are the same in Slicer 5.4 to 5.12).

The files ship with the module, so the URIs are local ``file://`` URIs (Sample Data copies them into its cache
with ``urllib``); the SHA256 checksums make Slicer refresh a cached copy when a release changes a sample.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..core.paths import RESOURCES_DIR, SAMPLE_DIR

THUMBNAIL_DIR = RESOURCES_DIR / "Icons" / "SampleData"
CATEGORY = "LungTumorSeg"
# (sample name shown in Sample Data, file in Resources/Sample, node name)
SAMPLES = (
    ("LungTumorSeg demo nodule", "demo_nodule.nii.gz", "LungTumorSeg demo nodule"),
    ("LungTumorSeg demo chest CT", "demo_ct.nii.gz", "LungTumorSeg demo chest CT"),
)


def sha256_checksum(path: Path) -> str:
    """``SHA256:<hex digest>``, the checksum format Sample Data verifies."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"SHA256:{digest.hexdigest()}"


def thumbnail_path(file_name: str, thumbnail_dir: Path = THUMBNAIL_DIR) -> Path:
    """The Sample Data thumbnail of a sample file (``demo_nodule.nii.gz`` → ``demo_nodule.png``)."""
    return thumbnail_dir / (file_name.split(".")[0] + ".png")


def sample_data_sources(sample_dir: Path = SAMPLE_DIR, thumbnail_dir: Path = THUMBNAIL_DIR) -> list[dict[str, Any]]:
    """Keyword arguments of ``registerCustomSampleDataSource``, one dict per sample present on disk."""
    sources = []
    for sample_name, file_name, node_name in SAMPLES:
        path = sample_dir / file_name
        if not path.is_file():
            continue
        thumbnail = thumbnail_path(file_name, thumbnail_dir)
        sources.append(
            {
                "category": CATEGORY,
                "sampleName": sample_name,
                "uris": path.resolve().as_uri(),
                "fileNames": f"LungTumorSeg_{file_name}",  # unique in Sample Data's shared cache folder
                "nodeNames": node_name,
                "checksums": sha256_checksum(path),
                "thumbnailFileName": str(thumbnail) if thumbnail.is_file() else None,
            }
        )
    return sources
