"""Copy-paste augmentation (synthetic central tumours) and fine-tuning start weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_chest

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.model.bundle import find_bundle
from LungTumorSegLib.model.networks import build_network
from LungTumorSegTrainingLib.data.lesion_paste import (
    Lesion,
    is_calcified,
    juxtamediastinal_sites,
    lung_mask,
    paste,
    resize_lesion,
)
from LungTumorSegTrainingLib.training.checkpoints import load_initial_weights


def _ball(radius: int, hu: float) -> Lesion:
    grid = np.indices((2 * radius + 3,) * 3) - (radius + 1)
    mask = (grid**2).sum(axis=0) <= radius**2
    return Lesion(np.where(mask, hu, -850.0).astype(np.float32), mask, (1.0, 1.0, 1.0))


def test_lung_mask_finds_the_two_lungs_and_sites_lie_medially():
    ct, _ = synthetic_chest(spacing=(1.5, 1.5, 2.5), nodules=())
    lung = lung_mask(ct.array)
    assert lung.sum() == pytest.approx((ct.array < -400).sum() - (ct.array == -1000).sum(), rel=0.01)
    sites = juxtamediastinal_sites(lung, np.array(ct.spacing), max_mm=6.0)
    assert len(sites) > 0 and lung[tuple(sites.T)].all()
    centre_x = np.argwhere(lung)[:, 0].mean()
    assert np.abs(sites[:, 0] - centre_x).max() < 0.25 * np.ptp(np.argwhere(lung)[:, 0])


def test_paste_writes_the_lesion_and_its_exact_label_and_nothing_else():
    ct, _ = synthetic_chest(spacing=(1.0, 1.0, 1.0), shape=(96, 96, 48), nodules=())
    image = ct.array.astype(np.int16)
    before = image.copy()
    label = np.zeros(image.shape, bool)
    lesion = _ball(5, 40.0)
    centre = np.array([30, 48, 24])  # inside the left lung of the phantom
    assert paste(image, label, lesion, centre)
    assert label.sum() == lesion.mask.sum()
    assert np.all(image[label] > -200)  # the lesion is there, soft tissue inside the mask
    far = ~np.pad(label, 2)[2:-2, 2:-2, 2:-2] & ~label
    changed = image != before
    assert not (changed & far & (np.abs(np.indices(image.shape)[0] - 30) > 10)).any()


def test_paste_refuses_outside_the_volume_or_on_bone():
    ct, _ = synthetic_chest(spacing=(1.0, 1.0, 1.0), shape=(96, 96, 48), nodules=())
    image, label = ct.array.astype(np.int16), np.zeros(ct.shape, bool)
    assert not paste(image, label, _ball(5, 40.0), np.array([1, 48, 24]))
    image[20:40, 40:56, 16:32] = 700  # bone where the lesion would go
    assert not paste(image, label, _ball(5, 40.0), np.array([30, 48, 24]))
    assert not label.any()


def test_resize_enlarges_by_the_scale_and_calcified_nodules_are_recognised():
    lesion = _ball(4, 40.0)
    bigger = resize_lesion(lesion, np.array([1.0, 1.0, 2.0]), 2.0)
    assert bigger.mask.sum() * 2.0 == pytest.approx(lesion.mask.sum() * 8.0, rel=0.15)
    assert not is_calcified(lesion) and is_calcified(_ball(4, 600.0))


def test_initial_weights_load_from_a_bundle_member_and_refuse_another_shape(placeholder_bundle):
    bundle = find_bundle(str(placeholder_bundle))
    member = next(m for m in bundle.members if m.architecture == "UNet")
    network = build_network("UNet", member.kwargs)
    load_initial_weights(network, placeholder_bundle / member.file)
    reference = {spec.name: loaded for spec, loaded in bundle.load_networks("cpu")}[member.name]
    for key, value in reference.state_dict().items():
        assert torch.allclose(network.state_dict()[key].float(), value.float(), atol=1e-3), key
    other = build_network("UNet", {**member.kwargs, "channels": [8, 16]} | {"strides": [2]})
    with pytest.raises(InputError, match="do not fit"):
        load_initial_weights(other, placeholder_bundle / member.file)


def test_initial_weights_load_from_a_checkpoint_file_or_a_plain_state_dict(tmp_path):
    from LungTumorSegTrainingLib.training.checkpoints import save_checkpoint

    source = build_network("UNet", {"in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]})
    checkpoint = save_checkpoint(tmp_path / "best.pt", {"model": source.state_dict()})
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    for path in (checkpoint, tmp_path / "plain.pt"):
        target = build_network("UNet", {"in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]})
        load_initial_weights(target, path)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), (path.name, key)
