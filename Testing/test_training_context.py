"""Context training: ignore labels, lesions pasted into real lung, slice-thickness simulation, case weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import HU_WINDOW, synthetic_chest
from monai.losses import DiceCELoss

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.segmentation.lungfield import lung_field
from LungTumorSegLib.segmentation.preprocess import scale_hu
from LungTumorSegTrainingLib.config import TrainConfig
from LungTumorSegTrainingLib.data.context_transforms import (
    LUNG_KEY,
    LesionLibrary,
    LungMaskd,
    RandPasteLesiond,
    RandSliceThicknessd,
    SplitIgnored,
)
from LungTumorSegTrainingLib.data.datasets import context_weighted
from LungTumorSegTrainingLib.training.losses import mask_ignored

SPACING = (1.0, 1.0, 1.5)


SOLID_NODULE_HU = 40.0  # the phantom's 300 HU nodules would count as calcified


def _chest_item(nodules=()):
    ct, mask = synthetic_chest(spacing=SPACING, shape=(128, 112, 80), nodules=nodules)
    ct.array[mask] = SOLID_NODULE_HU
    image = scale_hu(ct.array, HU_WINDOW).numpy()[None]
    return {"image": torch.as_tensor(image), "label": torch.as_tensor(mask[None].astype(np.float32)), "case": "c"}


def _library():
    item = _chest_item(nodules=(((-30.0, 0.0, 0.0), 6.0), ((32.0, -10.0, 15.0), 4.0)))
    return LesionLibrary.from_items([item], SPACING, HU_WINDOW)


def test_split_ignored_turns_label_two_into_a_mask():
    label = torch.tensor([[0.0, 1.0, 2.0, 1.0]])
    out = SplitIgnored()({"label": label})
    assert out["label"].tolist() == [[0.0, 1.0, 0.0, 1.0]] and out["ignore"].tolist() == [[0.0, 0.0, 1.0, 0.0]]
    assert "ignore" not in SplitIgnored(keep_ignore=False)({"label": label})


def test_ignored_voxels_take_no_part_in_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    label = (torch.rand(2, 1, 8, 8, 8) > 0.7).float()
    ignore = torch.zeros_like(label)
    ignore[:, :, :3] = 1
    label = label * (1 - ignore)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    loss = loss_fn(mask_ignored(logits, ignore), label)
    loss.backward()
    assert logits.grad[:, :, :3].abs().max() == 0 and logits.grad[:, :, 3:].abs().max() > 0
    other = logits.detach().clone()
    other[:, :, :3] = torch.randn_like(other[:, :, :3]) * 10  # anything in the ignored voxels
    assert loss_fn(mask_ignored(other, ignore), label).item() == pytest.approx(loss.item(), rel=1e-3)
    assert mask_ignored(logits, None) is logits


def test_library_holds_the_nodules_and_skips_lesions_cut_by_the_edge():
    library = _library()
    assert len(library) == 2
    assert sorted(int(lesion.mask.sum()) for lesion in library.lesions)[-1] > 500
    item = _chest_item(nodules=(((-30.0, 0.0, 0.0), 6.0),))
    edge = {k: (v[:, :, :, :40] if torch.is_tensor(v) else v) for k, v in item.items()}  # cuts the nodule at z = 0
    assert len(LesionLibrary.from_items([edge], SPACING, HU_WINDOW)) == 0


def test_paste_puts_whole_lesions_into_lung_only_and_labels_them_exactly():
    item = _chest_item(nodules=(((-30.0, 0.0, 0.0), 8.0),))
    item = LungMaskd(SPACING, HU_WINDOW)(item)
    lung = item[LUNG_KEY][0].numpy() > 0
    assert lung.sum() * np.prod(SPACING) / 1000 > 100
    paste = RandPasteLesiond(_library(), HU_WINDOW, prob=1.0, max_count=2, scale_range=(1.0, 1.5))
    paste.set_random_state(1)
    before_label = item["label"][0].numpy() > 0.5
    out = paste(dict(item))
    assert LUNG_KEY not in out
    new = (out["label"][0].numpy() > 0.5) & ~before_label
    assert new.sum() > 0
    assert lung[new].mean() > 0.6  # pasted into lung parenchyma
    changed = out["image"][0].numpy() != item["image"][0].numpy()
    from scipy import ndimage

    near = ndimage.binary_dilation(new, structure=np.ones((3, 3, 3), bool), iterations=3)
    assert not (changed & ~near).any()  # nothing else changed (the soft rim reaches 3 voxels)
    assert (out["image"][0].numpy()[new] > 0.5).mean() > 0.9  # soft tissue inside the pasted mask
    assert not (new & ndimage.binary_dilation(before_label, iterations=2)).any()  # never on the real tumour


def test_paste_leaves_crops_without_lung_as_they_are():
    item = _chest_item()
    item["image"] = torch.full_like(item["image"], 0.75)  # soft tissue only, no lung
    item = LungMaskd(SPACING, HU_WINDOW)(item)
    assert item[LUNG_KEY].sum() == 0
    out = RandPasteLesiond(_library(), HU_WINDOW, prob=1.0)(dict(item))
    assert torch.equal(out["image"], item["image"]) and torch.equal(out["label"], item["label"])


def test_slice_thickness_averages_along_the_superior_axis():
    image = torch.zeros(1, 4, 4, 20)
    image[..., 10] = 1.0
    transform = RandSliceThicknessd(["image"], spacing_mm=1.0, thickness_mm=(5.0, 5.0), prob=1.0)
    out = transform({"image": image})["image"]
    assert out[0, 0, 0, 8:13].tolist() == pytest.approx([0.2] * 5) and out[0, 0, 0, 7] == 0
    assert out.sum() == pytest.approx(image.sum())
    assert RandSliceThicknessd(["image"], 1.0, prob=0.0)({"image": image})["image"] is image


def test_context_cases_make_up_the_requested_share_of_a_pass():
    cases = [{"case": f"LIDC-IDRI-{i:04d}_R_1"} for i in range(90)] + [{"case": f"P{i}_whole"} for i in range(3)]
    cfg = TrainConfig(context_cases=r"_whole$", context_share=0.4)
    subset = context_weighted(list(range(len(cases))), cases, cfg)
    drawn = [cases[i]["case"] for i in subset.indices]
    share = sum(name.endswith("_whole") for name in drawn) / len(drawn)
    assert share == pytest.approx(0.4, abs=0.02) and len(set(drawn)) == len(cases)


def test_a_cut_sub_volume_has_no_lung_field():
    ct, _ = synthetic_chest(spacing=(1.5, 1.5, 2.5), shape=(96, 96, 48), nodules=())
    assert lung_field(ct).found
    part = Volume(ct.array[:40, 30:60, 10:30].copy(), ct.affine)  # a piece of one lung, cut open
    assert not lung_field(part).found


def test_portable_makes_every_absolute_path_relative(tmp_path):
    from LungTumorSegTrainingLib.training.export import portable

    base = tmp_path / "repo"
    value = {
        "checkpoint": str(base / "runs" / "unet" / "checkpoints" / "best.pt"),
        "command": f"lungtumorseg-train train --data {base / 'runs' / 'data'} --split {tmp_path / 'shared' / 's.json'}",
        "cases": ["LIDC-IDRI-0001_R_1"],
        "number": 3,
    }
    out = portable(value, base)
    assert out["checkpoint"] == "runs/unet/checkpoints/best.pt"
    assert out["command"] == "lungtumorseg-train train --data runs/data --split ../shared/s.json"
    assert out["cases"] == ["LIDC-IDRI-0001_R_1"] and out["number"] == 3
