"""Rebuild the bundled model `lungtumorseg-ensemble` from ../shared/data with one command (seeded).

Each step is skipped when its result exists, so an interrupted rebuild continues where it stopped
(a stopped training run is resumed):

1. training data: LIDC-IDRI crops + every labelled whole CT, and the split with its whole-CT
   cross-validation folds (scripts/build_training_data.py)
2. cross-validation: each member pre-trained once on nodule crops (patients without a whole CT), then
   fine-tuned once per fold with whole-CT context, without that fold's whole CTs (and without any crop of
   their patients); the LIDC test patients are in no fold's training
3. cross-validated whole-CT scores: every whole CT segmented by the fold model that never saw it
   (``lungtumorseg-train evaluate runs/cv/cv_plan.json --whole-ct``), for the ensemble and per member
4. the shipped members: the same fine-tuning on all whole CTs (the split's final fold)
5. export to LungTumorSeg/Resources/Models/lungtumorseg-ensemble (fp16; non-commercial licence, since
   two whole CTs are CC BY-NC)
6. the sensitivity presets chosen on the cross-validation (scripts/choose_presets.py: nested, with the
   validation crops' nodules) and written into the manifest, with scripts/data/operating_points.json
7. targets measured (scripts/evaluate_bundle.py) and written into the manifest's metrics

    python scripts/build_bundle.py [--device cpu|cuda] [--skip-cv | --cv-only] [--members unet ...]

``--cv-only`` runs steps 1-3 and then step 6 for the bundle already in place (its weights stay as they are): the
fold models, their cross-validated scores and the presets chosen on them.

All paths are relative to the repository (the manifest holds no absolute path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = "../shared/data"
RUNS = "runs"
DATA = f"{RUNS}/bundle-data"
SPLIT = f"{DATA}/split.json"
FOLDS = f"{DATA}/cv_folds.json"
CV = f"{RUNS}/cv"
CV_REPORT = f"{CV}/whole_ct_ensemble/whole_ct.json"  # the cross-validated whole-CT scores of the members together
# the member network: batch norm (eval-mode statistics do not depend on the window), 5 levels (receptive
# field ~120 voxels, for tumours of 5-9 cm), at the bundle's input spacing
NET = ["--arch", "UNet", "--unet-channels", "16", "32", "64", "128", "256", "--unet-res-units", "1"]
NET += ["--norm", "batch", "--spacing", "1.0", "1.0", "1.5", "--loss", "dicece", "--scanner-augment"]
# stage 1, shared by every fold: nodules, from the crops of patients without a whole CT (the split's last fold)
PRETRAIN = [*NET, "--patch-size", "64", "64", "32", "--batch-size", "2", "--samples-per-case", "2"]
PRETRAIN += ["--pos-ratio", "0.67", "--steps-per-epoch", "50", "--epochs", "40", "--val-every", "10"]
PRETRAIN += ["--lr", "1e-3", "--warmup-epochs", "1"]
# stage 2, per fold: whole-CT context (half the draws), training nodules pasted into whole-CT lung, negatives
# centred on tissue (vessels, hilum, heart, chest wall, diaphragm)
FINETUNE = [*NET, "--patch-size", "96", "96", "64", "--batch-size", "2", "--samples-per-case", "2"]
FINETUNE += ["--pos-ratio", "0.5", "--context-cases", "_whole$", "--context-share", "0.5", "--negative-min-hu", "-500"]
FINETUNE += ["--paste-prob", "0.7", "--paste-scale", "0.7", "2.5", "--steps-per-epoch", "50", "--epochs", "30"]
FINETUNE += ["--val-every", "5", "--lr", "5e-4", "--warmup-epochs", "1"]
RECIPES = {"unet": (PRETRAIN, FINETUNE)}
EXPORT = ["--name", "lungtumorseg-ensemble", "--model-version", "0.3.0", "--patch-size", "128", "128", "96"]
EXPORT += ["--overlap", "0.5", "--tta", "2", "--min-lesion-ml", "0.05"]
EXPORT += [
    "--description",
    "Lung tumour UNet for whole chest CT (batch norm; nodule pre-training, then whole-CT context fine-tuning); "
    "rebuild: make bundle (scripts/build_bundle.py)",
]
LICENCE = (
    "CC BY-NC 3.0 (non-commercial): trained on NSCLC-Radiomics LUNG1-001 and the IBSI CT phantom (CC BY-NC 3.0) "
    "besides CC BY 3.0 data (LIDC-IDRI, 4D-Lung); code Apache-2.0"
)
MODEL_CARD = "README.md"


def run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def status(folder: str) -> str | None:
    path = ROOT / folder / "status.json"
    return json.loads(path.read_text(encoding="utf-8")).get("state") if path.is_file() else None


def train(options: list[str], folder: str, machine: list[str]) -> None:
    """Train (or resume, or skip when finished) one run."""
    state = status(folder)
    if state == "finished":
        return
    if state in ("stopped", "failed", "running") and (ROOT / folder / "checkpoints" / "last.pt").is_file():
        run(tool("lungtumorseg-train"), "resume", folder, *machine)
        return
    run(
        tool("lungtumorseg-train"),
        "train",
        "--data",
        DATA,
        "--split",
        SPLIT,
        "-o",
        folder,
        *options,
        "--seed",
        "0",
        *machine,
    )


def train_member(member: str, fold: int, folder: str, pretrain_fold: int, machine: list[str]) -> None:
    """A member on one fold: the shared nodule pre-training, then the fold's whole-CT fine-tuning from it."""
    pretrain, finetune = RECIPES[member]
    pretrained = f"{RUNS}/{member}-pretrain"
    train([*pretrain, "--fold", str(pretrain_fold)], pretrained, machine)
    train([*finetune, "--fold", str(fold), "--init-weights", pretrained], folder, machine)


def write_plan(folds: list[dict], members: list[str], path: Path, output: dict) -> None:
    """A cross-validation plan: each fold's member runs (an equal-weight ensemble) and its held-out whole CTs."""
    plan = {
        "folds": [
            {
                "name": f"fold{f['fold']}",
                "model": [f"{member}-f{f['fold']}" for member in members],
                "cases": f["whole_ct"],
                "output": output,
            }
            for f in folds
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="training device (auto, cpu, cuda)")
    parser.add_argument("--out", default="LungTumorSeg/Resources/Models/lungtumorseg-ensemble")
    parser.add_argument("--threads", default="0", help="CPU threads per training run (0: all cores)")
    parser.add_argument("--members", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    stages = parser.add_mutually_exclusive_group()
    stages.add_argument("--skip-cv", action="store_true", help="train only the shipped members")
    stages.add_argument("--cv-only", action="store_true", help="stop after the cross-validation (steps 1-3)")
    args = parser.parse_args()
    machine = ["--device", args.device, "--threads", args.threads, "--progress", "tqdm"]
    if not (ROOT / SPLIT).is_file():
        run(sys.executable, "scripts/build_training_data.py", "--data", DATA_ROOT, "--out", DATA)
    folds = json.loads((ROOT / FOLDS).read_text(encoding="utf-8"))["folds"]
    cv_folds = [f for f in folds if not f["final"] and not f.get("pretrain")]
    final = next(f["fold"] for f in folds if f["final"])
    pretrain = next(f["fold"] for f in folds if f.get("pretrain"))
    patch = [int(s) for s in EXPORT[EXPORT.index("--patch-size") + 1 :][:3]]
    output = {"patch_size": patch, "overlap": float(EXPORT[EXPORT.index("--overlap") + 1])}  # as the bundle
    if not args.skip_cv:
        for member in args.members:
            for fold in cv_folds:
                train_member(member, fold["fold"], f"{CV}/{member}-f{fold['fold']}", pretrain, machine)
        plans = {"ensemble": args.members, **({m: [m] for m in args.members} if len(args.members) > 1 else {})}
        for label, members in plans.items():
            plan = ROOT / CV / f"cv_plan_{label}.json"
            write_plan(cv_folds, members, plan, output)
            # a case scored before by the same model is reused: this resumes, and is cheap once done
            evaluate = [tool("lungtumorseg-train"), "evaluate", str(plan.relative_to(ROOT)), "--whole-ct", DATA_ROOT]
            run(*evaluate, "-o", f"{CV}/whole_ct_{label}")
    if args.cv_only:
        run(sys.executable, "scripts/choose_presets.py", "--bundle", args.out, "--write-manifest")
        return
    for member in args.members:
        train_member(member, final, f"{RUNS}/{member}", pretrain, machine)
    sources = [f"{RUNS}/{member}" for member in args.members]
    card = ROOT / args.out / MODEL_CARD
    card_text = card.read_text(encoding="utf-8") if card.is_file() else None
    run(tool("lungtumorseg-train"), "export", *sources, "--out", args.out, *EXPORT, "--licence", LICENCE, "--overwrite")
    if card_text is not None:  # export replaces the whole folder; the model card is not one of its files
        card.write_text(card_text, encoding="utf-8")
    if (ROOT / CV_REPORT).is_file():  # the presets (and output.min_peak_probability) from the cross-validation
        run(sys.executable, "scripts/choose_presets.py", "--bundle", args.out, "--write-manifest")
    evaluation = ["--split", SPLIT, "-o", f"{RUNS}/eval", "--member-times", "--write-manifest"]
    context_fold = next((f for f in cv_folds if "lidc-idri-0001" in f["whole_ct"]), None)
    if context_fold is not None and not args.skip_cv:  # the context check also by a model that never saw the case
        evaluation += ["--context-model", f"{CV}/{args.members[0]}-f{context_fold['fold']}"]
    if (ROOT / CV_REPORT).is_file():
        evaluation += ["--cv-report", CV_REPORT]
    run(sys.executable, "scripts/evaluate_bundle.py", args.out, *evaluation)


if __name__ == "__main__":
    main()
