"""The ``lungtumorseg-train`` command line: prepare, train, resume, evaluate, ensemble, export."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from LungTumorSegLib.cli.main import report_error, run_guarded
from LungTumorSegLib.core.progress import MODES

from .. import __version__
from ..config import CACHE_MODES, LOSSES, NORMS, TrainConfig
from . import commands

EPILOG = "Research use only. Full guide: docs/training.md (data layouts, run folder, DDP, SLURM, MSD Task06)."
DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lungtumorseg-train",
        description="Train lung tumour segmentation models (MONAI UNet / SwinUNETR) on chest CT, evaluate them, "
        "search ensemble weights and export model bundles that 'lungtumorseg segment' and the Slicer module use.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(sub)
    _add_train(sub)
    _add_resume(sub)
    _add_evaluate(sub)
    _add_ensemble(sub)
    _add_export(sub)
    return parser


def _data_argument(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        required=required,
        help="an MSD task folder (with dataset.json, e.g. Task06_Lung), a folder with image and label sub-folders "
        "(imagesTr/+labelsTr/, image/+mask/, ...), or two folders: IMAGES LABELS (labels named like the images)",
    )


def _split_arguments(parser: argparse.ArgumentParser, subset_default: str) -> None:
    parser.add_argument("--split", metavar="FILE", help="split JSON (default: the run folder's split.json)")
    parser.add_argument("--fold", type=int, help="fold of the split (default: the run's fold, else 0)")
    parser.add_argument(
        "--subset",
        choices=("val", "test", "train", "all"),
        default=subset_default,
        help=f"which cases of the split (default: {subset_default}; 'all' ignores the split)",
    )
    parser.add_argument("--max-cases", type=int, default=0, metavar="N", help="only the first N cases (quick checks)")


def _runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    parser.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="check a dataset; build an MSD task folder; write a patient-level split",
        description="Check image/label pairs (files present, same grid, labels only 0/1). Optionally write an "
        "MSD-style task folder (imagesTr/, labelsTr/, dataset.json; symlinks unless --copy) and/or a split JSON "
        "that keeps every patient's cases together.",
        epilog="Example: lungtumorseg-train prepare --data crops/image crops/mask --msd-out Task100_LIDC "
        "--split-out Task100_LIDC/split.json --folds 5",
    )
    _data_argument(p, required=True)
    p.add_argument("--strict", action="store_true", help="fail on images without a label (default: skip them)")
    p.add_argument("--no-value-check", action="store_true", help="skip reading labels to check their values")
    p.add_argument("--max-cases", type=int, default=0, metavar="N", help="only the first N cases")
    g = p.add_argument_group("MSD task folder")
    g.add_argument("--msd-out", metavar="TASK_DIR", help="write an MSD task folder here (e.g. Task100_LIDC)")
    g.add_argument("--name", help="dataset name in dataset.json (default: the folder name)")
    g.add_argument("--description", help="dataset description in dataset.json")
    g.add_argument("--copy", action="store_true", help="copy the files instead of symlinking them")
    g = p.add_argument_group("split")
    g.add_argument("--split-out", metavar="FILE", help="write a split JSON here")
    g.add_argument("--val-fraction", type=float, default=0.2, help="fraction of patients for validation (0.2)")
    g.add_argument("--test-fraction", type=float, default=0.0, help="fraction of patients held out as test (0)")
    g.add_argument("--folds", type=int, default=0, help="k-fold cross-validation with K folds instead of fractions")
    g.add_argument("--seed", type=int, default=0, help="shuffling seed (0)")
    g.add_argument(
        "--patient-pattern",
        default="",
        metavar="REGEX",
        help="regex giving the patient id from a case name (default: LIDC-IDRI-XXXX, lung_XXX, ...)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset.json / split file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")
    p.set_defaults(func=commands.run_prepare)


def _stop_file_argument(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--stop-file",
        metavar="FILE",
        help="stop (resumably, with a checkpoint) after the current step once FILE exists; works on every OS "
        "(the Slicer module's Stop button)",
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = DEFAULTS
    p = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a UNet or SwinUNETR on patches of CT resampled to --spacing. Writes config.json, "
        "split.json, status.json, metrics.csv, TensorBoard events, curves.png, val_overlay.png and "
        "checkpoints/{last,best}.pt into --output. SIGTERM/Ctrl+C or --stop-file stop after the current step "
        "with a checkpoint; 'resume' continues. Multi-GPU: launch with torchrun (docs/training.md).",
        epilog="Example: lungtumorseg-train train --data Task06_Lung --arch UNet --epochs 300 -o runs/unet-f0",
    )
    _data_argument(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder to create")
    g = p.add_argument_group("data and split")
    g.add_argument("--split", metavar="FILE", help="split JSON from 'prepare' (default: a new split by patient)")
    g.add_argument("--fold", type=int, help=f"fold of --split to train ({d.fold})")
    g.add_argument(
        "--val-fraction", type=float, help=f"validation fraction of patients without --split ({d.val_fraction})"
    )
    g.add_argument("--test-fraction", type=float, help=f"test fraction of patients without --split ({d.test_fraction})")
    g.add_argument("--patient-pattern", metavar="REGEX", help="regex for the patient id in case names")
    g.add_argument("--max-cases", type=int, metavar="N", help="use only the first N cases (quick checks)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=("UNet", "SwinUNETR"), help=f"network ({d.arch})")
    g.add_argument(
        "--unet-channels", type=int, nargs="+", metavar="C", help="UNet channels per level (16 32 64 128 256)"
    )
    g.add_argument("--unet-strides", type=int, nargs="+", metavar="S", help="UNet strides (2 per level)")
    g.add_argument("--unet-res-units", type=int, metavar="N", help="UNet residual units per block (2)")
    g.add_argument("--swin-feature-size", type=int, metavar="F", help="SwinUNETR feature size (12; 48 = paper size)")
    g.add_argument("--swin-depths", type=int, nargs=4, metavar="D", help="SwinUNETR blocks per stage (2 2 2 2)")
    g.add_argument(
        "--swin-checkpointing", action="store_true", default=None, help="gradient checkpointing (less GPU memory)"
    )
    g.add_argument(
        "--norm",
        choices=[n for n in NORMS if n],
        help="normalisation layers (default: instance); batch norm in eval mode does not depend on the window",
    )
    g.add_argument(
        "--init-weights",
        metavar="FILE",
        help="start from these weights (fine-tuning): a checkpoint .pt, a run folder, or a bundle member"
        " .safetensors with the same architecture and sizes",
    )
    g = p.add_argument_group("input geometry (copied into the exported bundle)")
    g.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="voxel size in mm (1.5 1.5 2.0)")
    g.add_argument(
        "--hu-window", type=float, nargs=2, metavar=("LO", "HI"), help="HU window scaled to 0..1 (-1000 400)"
    )
    g.add_argument(
        "--patch-size",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="training patch and sliding window in voxels (96 96 64); multiples of 32 for SwinUNETR",
    )
    g.add_argument("--overlap", type=float, help=f"sliding-window overlap for validation ({d.overlap})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"epochs ({d.epochs})")
    g.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default: one pass over the training cases)")
    g.add_argument("--batch-size", type=int, help=f"cases per step ({d.batch_size}); patches = cases x samples")
    g.add_argument("--samples-per-case", type=int, help=f"patches drawn per case ({d.samples_per_case})")
    g.add_argument("--pos-ratio", type=float, help=f"fraction of patches centred on tumour ({d.pos_ratio})")
    g.add_argument(
        "--negative-min-hu",
        type=float,
        help="centre negative patches only on voxels above this HU (-500: tissue, not lung air; default: anywhere)",
    )
    g.add_argument("--lr", type=float, help=f"peak learning rate, AdamW ({d.lr})")
    g.add_argument("--weight-decay", type=float, help=f"AdamW weight decay ({d.weight_decay})")
    g.add_argument(
        "--warmup-epochs", type=int, help=f"linear warm-up epochs before the cosine decay ({d.warmup_epochs})"
    )
    g.add_argument("--grad-clip", type=float, help=f"gradient norm clipping, 0 = off ({d.grad_clip})")
    g.add_argument("--loss", choices=LOSSES, help=f"loss ({d.loss}); topk = Dice + hardest-k%% cross-entropy")
    g.add_argument("--topk-percent", type=float, help=f"k for --loss topk ({d.topk_percent})")
    g.add_argument("--no-augment", action="store_true", help="no flips/affine/intensity augmentation")
    g.add_argument(
        "--scanner-augment",
        action="store_true",
        default=None,
        help="also vary what differs between scanners: slice thickness 1-5 mm, soft/sharp kernel, noise, contrast",
    )
    g = p.add_argument_group("whole-CT context")
    g.add_argument(
        "--context-cases",
        metavar="REGEX",
        help="regular expression for the names of whole-CT cases (e.g. '_whole$'), for --context-share",
    )
    g.add_argument(
        "--context-share", type=float, help="fraction of the training draws from the context cases (0: as listed)"
    )
    g.add_argument(
        "--paste-prob",
        type=float,
        help="probability that a whole-CT patch gets training nodules pasted into its lung (0 = off)",
    )
    g.add_argument("--paste-max", type=int, help=f"most lesions pasted into one patch ({d.paste_max})")
    g.add_argument(
        "--paste-scale",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help=f"size factor of pasted lesions, log-uniform ({d.paste_scale[0]:g} {d.paste_scale[1]:g})",
    )
    g = p.add_argument_group("validation and stopping")
    g.add_argument("--val-every", type=int, help=f"validate every N epochs, 0 = never ({d.val_every})")
    g.add_argument("--patience", type=int, help="stop after N epochs without a better validation Dice (0 = off)")
    g.add_argument("--stop-after-epoch", type=int, help="stop (resumably) after this epoch, as the Stop button does")
    _stop_file_argument(g)
    g = p.add_argument_group("runtime")
    g.add_argument("--device", help="auto (CUDA if present), cpu, cuda (DDP: the local rank's GPU)")
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--cudnn-benchmark", action="store_true", default=None, help="faster cuDNN, not bit-reproducible")
    g.add_argument("--seed", type=int, help=f"random seed ({d.seed})")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores / processes)")
    g.add_argument("--num-workers", type=int, help=f"data-loading worker processes ({d.num_workers})")
    g.add_argument("--cache", choices=CACHE_MODES, help="cache pre-processed cases in memory, on disk or not (memory)")
    g.add_argument("--cache-rate", type=float, help="fraction of cases cached in memory (1.0)")
    g.add_argument("--cache-dir", help="folder for --cache disk (default: RUN_DIR/cache)")
    p.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")
    p.set_defaults(func=commands.run_train)


def _add_resume(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resume",
        help="continue a stopped or finished run",
        description="Continue RUN_DIR from checkpoints/last.pt with its config.json. With the same settings the "
        "loss curve is the one the uninterrupted run would have had. --epochs extends a finished run (the cosine "
        "schedule is stretched to the new end).",
        epilog="Example: lungtumorseg-train resume runs/unet-f0 --progress json",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    p.add_argument("--epochs", type=int, help="new total number of epochs")
    p.add_argument("--patience", type=int, help="new early-stopping patience (epochs)")
    p.add_argument("--val-every", type=int, help="new validation interval (epochs)")
    p.add_argument("--stop-after-epoch", type=int, help="stop (resumably) after this epoch")
    _stop_file_argument(p)
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--num-workers", type=int, help="data-loading worker processes")
    p.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")
    p.set_defaults(func=commands.run_resume)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint or bundle on a split with the full inference pipeline",
        description="Segment each case exactly as 'lungtumorseg segment' does (lung crop, TTA, post-processing, "
        "back on the CT grid) and score it: Dice, HD95, NSD, volume and RECIST errors, lesion detection. "
        "MODEL is a run folder (best.pt), a .pt checkpoint, a bundle folder or an installed bundle name.",
        epilog="Examples: lungtumorseg-train evaluate runs/unet-f0 --subset val -o runs/unet-f0/evaluation_val\n"
        "          lungtumorseg-train evaluate runs/cv/cv_plan.json --whole-ct -o runs/cv/whole_ct",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="run folder, checkpoint .pt, bundle folder or bundle name; with --whole-ct also a cross-validation "
        "plan (cv_plan.json: each fold's model and the whole CTs it did not train on)",
    )
    _data_argument(p, required=False)
    _split_arguments(p, "val")
    g = p.add_argument_group("whole CTs")
    g.add_argument(
        "--whole-ct",
        nargs="?",
        const="../shared/data",
        metavar="DATA_ROOT",
        help="score the labelled whole CTs of DATA_ROOT/chest-ct (default ../shared/data) instead of a split: "
        "detection, lesion Dice, false positives >= 0.1 ml, RECIST long-axis error, FROC curve, pictures",
    )
    g.add_argument("--cases", nargs="+", metavar="NAME", help="only these whole-CT folders (default: all labelled)")
    g.add_argument("--no-pictures", action="store_true", help="no per-case pictures and FROC plot")
    p.add_argument(
        "-o",
        "--output",
        help="write evaluation.csv and evaluation.json here (default for run folders: RUN_DIR/evaluation_<subset>)",
    )
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), help="flip test-time augmentations (default: model's)")
    p.add_argument("--threshold", type=float, help="probability threshold (default: model's)")
    p.add_argument("--min-lesion-ml", type=float, help="drop lesions smaller than this (default: model's)")
    p.add_argument("--no-lung-filter", action="store_true", help="keep lesions outside the lung field")
    p.add_argument("--no-lung-crop", action="store_true", help="run on the whole image, not the lung-field box")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _runtime_arguments(p)
    p.set_defaults(func=commands.run_evaluate)


def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="search ensemble weights and threshold on the validation split",
        description="Predict every member once on the validation cases (model grid), then grid-search weights "
        "on the simplex (--step) and the probability threshold that maximise the mean Dice. Writes a JSON that "
        "'export --ensemble' turns into a bundle.",
        epilog="Example: lungtumorseg-train ensemble runs/unet-f0 runs/swin-f0 -o runs/ensemble.json",
    )
    p.add_argument("members", nargs="+", metavar="MEMBER", help="run folders (best.pt) or .pt checkpoints")
    _data_argument(p, required=False)
    _split_arguments(p, "val")
    p.add_argument("--step", type=float, default=0.1, help="weight grid step (0.1)")
    p.add_argument("--thresholds", type=float, nargs="+", help="candidate thresholds (0.20, 0.25, ..., 0.80)")
    p.add_argument("-o", "--output", default="ensemble.json", help="result JSON (ensemble.json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _runtime_arguments(p)
    p.set_defaults(func=commands.run_ensemble)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model bundle from checkpoints or an ensemble JSON",
        description="Write a bundle (manifest.json + fp16 .safetensors, sha256-checked) that 'lungtumorseg "
        "segment --model NAME' and the Slicer module load. Default location: the user models folder "
        "($LUNGTUMORSEG_MODELS or ~/.lungtumorseg/models).",
        epilog="Examples: lungtumorseg-train export runs/unet-f0 --name lidc-unet; "
        "lungtumorseg-train export --ensemble runs/ensemble.json --name lung-ensemble",
    )
    p.add_argument("members", nargs="*", metavar="MEMBER", help="run folders (best.pt) or .pt checkpoints")
    p.add_argument("--ensemble", metavar="FILE", help="ensemble JSON from 'ensemble' (members, weights, threshold)")
    p.add_argument("--name", help="bundle name (default: the first run folder's name)")
    p.add_argument("--out", metavar="DIR", help="bundle folder (default: <user models folder>/NAME)")
    p.add_argument("--weights", type=float, nargs="+", help="member weights (default: equal, or the ensemble's)")
    p.add_argument("--threshold", type=float, help="probability threshold (default: the ensemble's, else 0.5)")
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=2, help="default flip TTA of the bundle (2)")
    p.add_argument("--min-lesion-ml", type=float, default=0.05, help="drop smaller lesions at inference (0.05)")
    p.add_argument("--no-lung-filter", action="store_true", help="do not restrict lesions to the lung field")
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest lesion at inference")
    p.add_argument(
        "--min-peak-probability",
        type=float,
        default=0.0,
        help="drop lesions whose highest probability stays below this (0: off; see evaluate --whole-ct)",
    )
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="inference window (training's)")
    p.add_argument("--overlap", type=float, help="inference sliding-window overlap (training's)")
    p.add_argument("--model-version", default="1.0.0", help="version string in the manifest (1.0.0)")
    p.add_argument("--description", help="description in the manifest")
    p.add_argument("--licence", help="licence of the weights in the manifest (say so when the data is non-commercial)")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default: float16, half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=commands.run_export)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "lungtumorseg-train " + shlex.join(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(
        level=level if commands.is_main_process() else logging.ERROR, format="%(levelname)s: %(message)s"
    )
    return run_guarded(args, _report_error)


def _report_error(args: argparse.Namespace, message: str) -> None:
    if commands.is_main_process():
        report_error(args, message, prog="lungtumorseg-train")


if __name__ == "__main__":
    sys.exit(main())
