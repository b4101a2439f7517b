"""Training engine end to end on real LIDC crops: train -> run folder -> evaluate -> ensemble -> export -> segment.

One tiny UNet (channels 8/16/32, patch 32x32x16 at 2 mm) is trained once through the command line
(``cli.main``) and shared by the tests of this module; the exported bundle is then used by the inference
engine on the full 4D-Lung chest CT, proving export -> inference compatibility.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.model.bundle import read_bundle
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import segment
from LungTumorSegTrainingLib.cli import main as cli
from LungTumorSegTrainingLib.data.splits import load_split, patient_id
from LungTumorSegTrainingLib.training.checkpoints import load_checkpoint
from LungTumorSegTrainingLib.training.run_folder import read_metrics, read_status

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIDC = SHARED_DATA / "lidc-nodule-crops"
CT_4DLUNG = SHARED_DATA / "chest-ct" / "4dlung-113_HM10395-phase40" / "ct.nii.gz"
TINY_ARGS = [
    "--unet-channels", "8", "16", "32",
    "--unet-res-units", "1",
    "--patch-size", "32", "32", "16",
    "--spacing", "2", "2", "2",
    "--batch-size", "2",
    "--samples-per-case", "2",
    "--lr", "3e-3",
    "--warmup-epochs", "0",
    "--threads", "1",
]  # fmt: skip
EPOCHS = 8


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Run ``lungtumorseg-train`` in this process; returns (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One tiny run: 12 LIDC crops, 8 epochs x 5 steps, validation every 4 epochs, JSON progress."""
    if not (LIDC / "image").is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC}")
    run_dir = tmp_path_factory.mktemp("engine") / "run"
    argv = ["train", "--data", str(LIDC), "--max-cases", "12", "-o", str(run_dir), "--epochs", str(EPOCHS)]
    code, stdout = run_cli(argv + ["--val-every", "4", *TINY_ARGS, "--progress", "json"])
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {"code": code, "run_dir": run_dir, "events": events}


def test_training_reduces_the_loss(trained):
    assert trained["code"] == 0
    history = read_metrics(trained["run_dir"])
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["global_step"] == EPOCHS * 5  # 10 training cases, 2 per step
    losses = np.array([row["train_loss"] for row in history])
    assert np.all(np.isfinite(losses))
    assert losses[-2:].mean() < 0.85 * losses[0], losses


def test_run_folder_layout_and_formats(trained):
    run_dir = trained["run_dir"]
    for name in ("config.json", "split.json", "status.json", "metrics.csv", "train.log", "curves.png",
                 "val_overlay.png", "checkpoints/last.pt", "checkpoints/best.pt"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["epoch"] == EPOCHS and status["epochs"] == EPOCHS
    assert {"pid", "updated", "best_dice", "best_epoch"} <= set(status)
    assert 0.0 <= status["best_dice"] <= 1.0 and status["best_epoch"] in (4, 8)
    with open(run_dir / "metrics.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["epoch", "global_step", "train_loss", "val_dice", "lr", "epoch_time_s", "best_dice"]
    config = json.loads((run_dir / "config.json").read_text())
    assert (
        config["arch"] == "UNet"
        and config["patch_size"] == [32, 32, 16]
        and config["command"].startswith("lungtumorseg-train train")
    )
    split = load_split(run_dir / "split.json")
    train, val = split.subset("train"), split.subset("val")
    assert len(train) == 10 and len(val) == 2
    assert not {patient_id(c) for c in train} & {patient_id(c) for c in val}
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == status["best_epoch"] and best["val_dice"] == pytest.approx(status["best_dice"])


def test_json_progress_events(trained):
    kinds = [e["event"] for e in trained["events"]]
    assert {"progress", "metrics", "checkpoint", "result"} <= set(kinds)
    metrics = [e for e in trained["events"] if e["event"] == "metrics"]
    assert [m["epoch"] for m in metrics] == list(range(1, EPOCHS + 1))
    assert {"epoch", "step", "train_loss", "val_dice", "lr"} <= set(metrics[0])
    assert metrics[0]["val_dice"] is None and metrics[3]["val_dice"] is not None
    fractions = [e["fraction"] for e in trained["events"] if e["event"] == "progress" and e["step"] == "train"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = trained["events"][-1]
    assert result["event"] == "result" and result["state"] == "finished" and result["epochs_completed"] == EPOCHS


def test_export_bundle_runs_in_the_inference_engine(trained, tmp_path):
    if not CT_4DLUNG.is_file():
        pytest.skip(f"shared 4D-Lung CT not available: {CT_4DLUNG}")
    bundle_dir = tmp_path / "tiny-lidc"
    code, _ = run_cli(["export", str(trained["run_dir"]), "--name", "tiny-lidc", "--out", str(bundle_dir)])
    assert code == 0
    bundle = read_bundle(bundle_dir)
    manifest = bundle.manifest
    assert manifest["input"]["spacing_mm"] == [2.0, 2.0, 2.0] and manifest["input"]["patch_size"] == [32, 32, 16]
    assert manifest["input"]["hu_window"] == [-1000.0, 400.0] and manifest["output"]["activation"] == "softmax"
    assert manifest["training"]["members"][0]["split"]["val"] == load_split(trained["run_dir"] / "split.json").subset(
        "val"
    )
    assert manifest["training"]["command"].startswith("lungtumorseg-train train")
    text = json.dumps(manifest["training"])
    for absolute in (str(Path.cwd()), str(trained["run_dir"].resolve())):  # relative paths only
        assert not re.search(r'(^|[\s"=])' + re.escape(absolute), text), absolute
    assert manifest["training"]["members"][0]["split"]["train_cases"] > 0
    assert manifest["metrics"]["val_dice_mean"] == pytest.approx(read_status(trained["run_dir"])["best_dice"])
    ct = load_volume(CT_4DLUNG)
    result = segment(ct, bundle, SegmentOptions(tta=1, device="cpu"))
    for output in (result.label, result.probability, result.entropy):
        assert output.shape == ct.shape and np.allclose(output.affine, ct.affine)
    assert float(result.probability.array.min()) >= 0.0 and float(result.probability.array.max()) <= 1.0


def test_evaluate_checkpoint_with_the_inference_pipeline(trained, tmp_path):
    out = tmp_path / "evaluation"
    code, _ = run_cli(["evaluate", str(trained["run_dir"]), "--tta", "1", "-o", str(out), "--progress", "none"])
    assert code == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["summary"]["cases"] == 2 and report["summary"]["failed"] == 0
    assert {"dice", "hd95_mm", "nsd"} <= set(report["cases"][0])
    assert (out / "evaluation.csv").read_text().startswith("case,dice,hd95_mm")


def test_ensemble_search_and_ensemble_export(trained, tmp_path):
    run_dir = trained["run_dir"]
    result_json = tmp_path / "ensemble.json"
    members = [str(run_dir / "checkpoints" / "best.pt"), str(run_dir / "checkpoints" / "last.pt")]
    code, _ = run_cli(["ensemble", *members, "-o", str(result_json), "--progress", "none"])
    assert code == 0
    result = json.loads(result_json.read_text())
    weights = [m["weight"] for m in result["members"]]
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0) and 0.2 <= result["threshold"] <= 0.8
    assert result["mean_dice"] >= max(m["val_dice_alone"] for m in result["members"]) - 1e-9
    assert len(result["cases"]) == 2 and len(result["table"]) == 11
    bundle_dir = tmp_path / "ens"
    code, _ = run_cli(["export", "--ensemble", str(result_json), "--name", "ens", "--out", str(bundle_dir), "--fp32"])
    assert code == 0
    bundle = read_bundle(bundle_dir)
    assert [m.weight for m in bundle.members] == pytest.approx(weights)
    assert bundle.output["threshold"] == pytest.approx(result["threshold"])
    assert bundle.manifest["metrics"]["val_dice_mean"] == pytest.approx(result["mean_dice"])
    assert len(bundle.load_networks("cpu")) == 2


def test_cli_errors_are_one_line_with_exit_code_2(trained, tmp_path, capsys):
    code = cli.main(["train", "--data", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file or folder" in err[0]
    code = cli.main(["train", "--data", str(LIDC), "-o", str(tmp_path / "r"), "--arch", "SwinUNETR"]
                    + ["--patch-size", "48", "48", "32"])  # fmt: skip
    assert code == 2 and "multiple of 32" in capsys.readouterr().err
    code = cli.main(["train", "--data", str(LIDC), "-o", str(trained["run_dir"]), "--max-cases", "4"])
    assert code == 2 and "resume" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["prepare", "train", "resume", "evaluate", "ensemble", "export"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: lungtumorseg-train " + command in capsys.readouterr().out


def test_swinunetr_trains_with_disk_cache_and_exports(tmp_path):
    """SwinUNETR (1 block per stage), PersistentDataset cache, a worker process, Top-K loss; bundle loads."""
    if not (LIDC / "image").is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC}")
    run_dir = tmp_path / "swin"
    argv = ["train", "--data", str(LIDC), "--max-cases", "4", "-o", str(run_dir), "--arch", "SwinUNETR"]
    argv += ["--swin-depths", "1", "1", "1", "1", "--patch-size", "64", "32", "32", "--spacing", "2", "2", "2"]
    argv += ["--epochs", "1", "--steps-per-epoch", "2", "--val-every", "0", "--loss", "topk", "--cache", "disk"]
    argv += ["--num-workers", "1", "--batch-size", "1", "--samples-per-case", "1", "--threads", "1"]
    code, _ = run_cli(argv + ["--progress", "none"])
    assert code == 0
    assert list((run_dir / "cache").rglob("*.pt")), "PersistentDataset wrote no cache files"
    assert read_metrics(run_dir)[0]["global_step"] == 2
    code, _ = run_cli(["export", str(run_dir), "--name", "swin", "--out", str(tmp_path / "swin-bundle")])
    assert code == 0
    bundle = read_bundle(tmp_path / "swin-bundle")
    assert bundle.members[0].architecture == "SwinUNETR" and bundle.patch_size == (64, 32, 32)
    ((_, network),) = bundle.load_networks("cpu")
    assert network(torch.zeros(1, 1, 64, 32, 32)).shape == (1, 2, 64, 32, 32)
