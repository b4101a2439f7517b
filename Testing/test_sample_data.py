"""The demo samples in Slicer's Sample Data module (slicer_glue.sample_data): local file URIs, checksums."""

from __future__ import annotations

import ast
import hashlib
import urllib.request
from pathlib import Path

from conftest import ROOT

from LungTumorSegLib.slicer_glue import sample_data

# registerCustomSampleDataSource's keywords in both Slicer 5.4-5.6 and 5.8-5.12 (Modules/Scripted/SampleData/
# SampleData.py; 5.8 renamed loadFileType to loadFileTypes, so the sources pass neither: the default reader loads
# .nii.gz as a volume)
REGISTER_KEYWORDS = {
    "category",
    "sampleName",
    "uris",
    "fileNames",
    "nodeNames",
    "customDownloader",
    "thumbnailFileName",
    "loadFiles",
    "loadFileProperties",
    "checksums",
}


def test_both_demo_samples_are_offered_with_thumbnails():
    sources = sample_data.sample_data_sources()
    assert [s["sampleName"] for s in sources] == ["LungTumorSeg demo nodule", "LungTumorSeg demo chest CT"]
    for source in sources:
        assert set(source) <= REGISTER_KEYWORDS
        assert source["category"] == "LungTumorSeg" and source["fileNames"].startswith("LungTumorSeg_")
        thumbnail = Path(source["thumbnailFileName"])
        assert thumbnail.is_file() and thumbnail.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_uris_download_as_sample_data_does(tmp_path: Path):
    """Sample Data fetches with urllib.request.urlretrieve, then checks the SHA256 checksum."""
    for source in sample_data.sample_data_sources():
        assert source["uris"].startswith("file://")
        target = tmp_path / source["fileNames"]
        urllib.request.urlretrieve(source["uris"], target)
        algorithm, digest = source["checksums"].split(":")
        assert algorithm == "SHA256" and hashlib.sha256(target.read_bytes()).hexdigest() == digest
        assert target.read_bytes() == Path(urllib.request.url2pathname(source["uris"][len("file://") :])).read_bytes()


def test_missing_samples_are_not_offered(tmp_path: Path):
    assert sample_data.sample_data_sources(tmp_path, tmp_path) == []
    (tmp_path / "demo_nodule.nii.gz").write_bytes(b"not really")
    (source,) = sample_data.sample_data_sources(tmp_path, tmp_path)
    assert source["thumbnailFileName"] is None


def test_the_module_registers_them_at_startup():
    tree = ast.parse((ROOT / "LungTumorSeg" / "LungTumorSeg.py").read_text(encoding="utf-8"))
    calls = {ast.unparse(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "SampleData.SampleDataLogic.registerCustomSampleDataSource" in calls
    connect = calls["slicer.app.connect"]
    assert ast.literal_eval(connect.args[0]) == "startupCompleted()" and ast.unparse(connect.args[1]) == (
        "registerSampleData"
    )
