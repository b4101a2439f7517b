"""Rebuild the bundled model `lungtumorseg-ensemble` from ../shared/data with one command (seeded).

Each step is skipped when its result exists, so an interrupted rebuild continues where it stopped:

1. training data: LIDC crops + negative 4D-Lung blocks (scripts/build_training_data.py)
2. patient-level split, seed 0: 15 % validation, 15 % held-out test patients
3. UNet v1 (20 of 30 cosine epochs), then UNet v2: v1 fine-tuned with a lower learning rate
4. SwinUNETR (feature size 12, one block per stage, 64 x 32 x 32 patches; 12 of 30 epochs)
5. ensemble weights and threshold searched on the validation crops
6. export to LungTumorSeg/Resources/Models/lungtumorseg-ensemble (fp16)
7. targets measured (scripts/evaluate_bundle.py) and written into the manifest's metrics

    python scripts/build_bundle.py [--device cpu|cuda] [--out LungTumorSeg/Resources/Models/lungtumorseg-ensemble]

Measured end to end on 2 CPU cores with a fresh runs/: 40 minutes, peak RAM 6.6 GB (UNet v1 10 min, UNet v2
4.5 min, SwinUNETR 21 min, ensemble search 1 min, evaluation 4 min). GPU time not measured (none available).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
DATA = RUNS / "bundle-data"
SPLIT = RUNS / "bundle-split.json"
COMMON = ["--spacing", "1.0", "1.0", "1.5", "--batch-size", "4", "--samples-per-case", "2", "--loss", "dicece"]
UNET = ["--arch", "UNet", "--unet-channels", "16", "32", "64", "128", "--unet-strides", "2", "2", "2"]
UNET += ["--unet-res-units", "1", "--patch-size", "64", "64", "32"]
SWIN = ["--arch", "SwinUNETR", "--swin-feature-size", "12", "--swin-depths", "1", "1", "1", "1"]
SWIN += ["--patch-size", "64", "32", "32"]
RUN_ARGS = {
    "unet-v1": [*UNET, "--split", str(SPLIT), "--steps-per-epoch", "100", "--epochs", "30", "--stop-after-epoch", "20"]
    + ["--val-every", "5", "--lr", "1e-3", "--warmup-epochs", "1"],
    "unet-v2": [*UNET, "--split", str(SPLIT), "--init-weights", str(RUNS / "unet-v1"), "--steps-per-epoch", "50"]
    + ["--epochs", "20", "--val-every", "5", "--lr", "2e-4", "--warmup-epochs", "1"],
    "swin-v1": [*SWIN, "--split", str(SPLIT), "--steps-per-epoch", "50", "--epochs", "30", "--stop-after-epoch", "12"]
    + ["--val-every", "3", "--lr", "8e-4", "--warmup-epochs", "1"],
}
ENSEMBLE_MEMBERS = ("unet-v2", "swin-v1")
MODEL_CARD = "README.md"
EXPORT = ["--name", "lungtumorseg-ensemble", "--model-version", "0.2.1", "--patch-size", "96", "96", "64"]
EXPORT += ["--overlap", "0.25", "--tta", "2"]


def run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="training device (auto, cpu, cuda)")
    parser.add_argument("--out", type=Path, default=ROOT / "LungTumorSeg/Resources/Models/lungtumorseg-ensemble")
    parser.add_argument("--threads", default="0", help="CPU threads per training run (0: all cores)")
    args = parser.parse_args()
    train = tool("lungtumorseg-train")
    if not (DATA / "mask").is_dir():
        run(sys.executable, "scripts/build_training_data.py", "--out", str(DATA))
    if not SPLIT.is_file():
        split_options = ["--val-fraction", "0.15", "--test-fraction", "0.15", "--seed", "0"]
        run(train, "prepare", "--data", str(DATA), "--split-out", str(SPLIT), *split_options)
    for name, options in RUN_ARGS.items():
        folder = RUNS / name
        if _finished(folder):
            continue
        machine = ["--device", args.device, "--threads", args.threads, "--seed", "0", "--progress", "tqdm"]
        run(train, "train", "--data", str(DATA), "-o", str(folder), *COMMON, *options, *machine)
    ensemble = RUNS / "ensemble.json"
    if not ensemble.is_file():
        members = [str(RUNS / name) for name in ENSEMBLE_MEMBERS]
        run(train, "ensemble", *members, "--data", str(DATA), "--split", str(SPLIT), "-o", str(ensemble))
    card = args.out / MODEL_CARD
    card_text = card.read_text(encoding="utf-8") if card.is_file() else None
    run(train, "export", "--ensemble", str(ensemble), "--out", str(args.out), *EXPORT, "--overwrite")
    if card_text is not None:  # export replaces the whole folder; the model card is not one of its files
        card.write_text(card_text, encoding="utf-8")
    evaluation = ["--split", str(SPLIT), "-o", str(RUNS / "eval"), "--member-times", "--write-manifest"]
    run(sys.executable, "scripts/evaluate_bundle.py", str(args.out), *evaluation)


def _finished(folder: Path) -> bool:
    """True when the run folder holds a best checkpoint of a run that finished or stopped as planned."""
    status = folder / "status.json"
    if not (folder / "checkpoints" / "best.pt").is_file() or not status.is_file():
        return False
    return json.loads(status.read_text(encoding="utf-8")).get("state") in ("finished", "stopped")


if __name__ == "__main__":
    main()
