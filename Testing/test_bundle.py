"""Model bundles: manifest validation, checksums, safe weight loading, discovery."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from conftest import make_pointwise_bundle

from LungTumorSegLib.core.errors import BundleError
from LungTumorSegLib.model.bundle import find_bundle, list_bundles, load_state_dict, read_bundle


def test_bundled_models_load_and_verify():
    bundles = list_bundles()
    assert bundles, "no bundled model found"
    for path in bundles.values():
        bundle = read_bundle(path)
        networks = bundle.load_networks("cpu")
        assert len(networks) == len(bundle.members) >= 1
        assert all(not network.training for _, network in networks)


def test_tampered_weights_are_rejected(tmp_path, placeholder_bundle):
    bundle_dir = shutil.copytree(placeholder_bundle, tmp_path / "tampered")
    weights = bundle_dir / read_bundle(bundle_dir).members[0].file
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        read_bundle(bundle_dir).load_networks("cpu")


class _Payload:
    def __reduce__(self):
        return (open, (str(_Payload.target), "w"))


def test_pickled_code_in_weights_is_not_executed(tmp_path):
    _Payload.target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"weight": _Payload()}, handle)
    with pytest.raises(BundleError, match="cannot load weights"):
        load_state_dict(path)
    assert not _Payload.target.exists()


def test_plain_pt_state_dict_is_supported(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(load_state_dict(path)["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("input"), "missing 'input'"),
        (lambda m: m["members"][0].pop("sha256"), "missing 'sha256'"),
        (lambda m: m["members"][0].update(file="../outside.safetensors"), "inside the bundle"),
        (lambda m: m["output"].update(threshold=1.5), "threshold"),
    ],
)
def test_invalid_manifests_are_named(tmp_path, edit, message):
    path = make_pointwise_bundle(tmp_path / "pw", (1.0, 1.0, 1.0), patch=(32, 32, 32))
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        read_bundle(path)


def test_user_models_folder_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGTUMORSEG_MODELS", str(tmp_path))
    make_pointwise_bundle(tmp_path / "my-model", (1.0, 1.0, 1.0))
    assert "my-model" in list_bundles()
    assert find_bundle("my-model").name == "my-model"
    with pytest.raises(BundleError, match="not found"):
        find_bundle("no-such-model")


def test_swinunetr_patch_must_be_a_multiple_of_32(tmp_path, placeholder_bundle):
    bundle_dir = shutil.copytree(placeholder_bundle, tmp_path / "bad-patch")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["input"]["patch_size"] = [48, 64, 32]
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="multiple of 32 for SwinUNETR"):
        read_bundle(bundle_dir)


def test_a_member_can_keep_its_own_sliding_window(tmp_path):
    """SwinUNETR members are exported with their training patch; inference slides that window for them."""
    import numpy as np
    from conftest import pointwise_probability, synthetic_chest

    from LungTumorSegLib.segmentation.options import SegmentOptions
    from LungTumorSegLib.segmentation.pipeline import segment

    path = make_pointwise_bundle(tmp_path / "pw", (1.5, 1.5, 2.5), patch=(32, 32, 32))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["members"][0]["patch_size"] = [16, 32, 16]
    (path / "manifest.json").write_text(json.dumps(manifest))
    bundle = read_bundle(path)
    assert bundle.members[0].patch_size == (16, 32, 16)
    ct, _ = synthetic_chest()
    result = segment(ct, bundle, SegmentOptions(device="cpu", crop_to_lung=False))
    # a pointwise network gives the same answer with any window: the member's window ran without error
    expected = pointwise_probability(ct.array)
    assert np.abs(result.probability.array - expected).max() < 1e-3


def test_export_keeps_the_training_patch_for_swinunetr_members_only(tmp_path):
    from LungTumorSegTrainingLib.config import TrainConfig
    from LungTumorSegTrainingLib.training.export import Member, member_patch_size

    swin = Member("swin", tmp_path / "s.pt", TrainConfig(arch="SwinUNETR", patch_size=[64, 32, 32]), {})
    unet = Member("unet", tmp_path / "u.pt", TrainConfig(arch="UNet", patch_size=[64, 64, 32]), {})
    assert member_patch_size(swin) == [64, 32, 32]
    assert member_patch_size(unet) is None
