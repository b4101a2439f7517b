"""What each ``lungtumorseg-train`` subcommand does (the argument parsers live in cli.py)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from monai.data import Dataset

from LungTumorSegLib.core.device import resolve_device
from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.progress import ProgressReporter
from LungTumorSegLib.segmentation.options import SegmentOptions

from ..config import TrainConfig, write_json_atomic
from ..data.datalist import build_msd_layout, load_datalist, validate_cases
from ..data.splits import check_fractions, load_split, make_kfold, make_split, patient_id, select_cases
from ..evaluation.ensemble import DEFAULT_THRESHOLDS, predict_members, search_weights
from ..training.checkpoints import network_from_checkpoint
from ..training.export import OutputSettings, export_bundle, load_members, read_ensemble_file
from ..training.stopping import StopRequest

# TrainConfig fields set from same-named command-line options (argparse dest names)
TRAIN_OPTIONS = (
    "arch",
    "unet_channels",
    "unet_strides",
    "unet_res_units",
    "swin_feature_size",
    "swin_depths",
    "swin_checkpointing",
    "norm",
    "init_weights",
    "patch_size",
    "overlap",
    "batch_size",
    "samples_per_case",
    "pos_ratio",
    "negative_min_hu",
    "epochs",
    "steps_per_epoch",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "grad_clip",
    "scanner_augment",
    "context_cases",
    "context_share",
    "paste_prob",
    "paste_max",
    "paste_scale",
    "loss",
    "topk_percent",
    "val_every",
    "patience",
    "stop_after_epoch",
    "device",
    "cudnn_benchmark",
    "seed",
    "threads",
    "num_workers",
    "cache",
    "cache_rate",
    "cache_dir",
    "max_cases",
    "fold",
    "val_fraction",
    "test_fraction",
    "patient_pattern",
)
RESUME_OPTIONS = ("epochs", "patience", "val_every", "device", "threads", "num_workers", "stop_after_epoch")


def is_main_process() -> bool:
    """False on torchrun ranks other than 0 (they print nothing)."""
    return os.environ.get("RANK", "0") == "0"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of ``train``'s options."""
    cfg = TrainConfig(data=[str(p) for p in args.data], output=str(args.output), command=args.command_line)
    for name in TRAIN_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    if args.spacing is not None:
        cfg.spacing_mm = list(args.spacing)
    if args.hu_window is not None:
        cfg.hu_window = list(args.hu_window)
    if args.split is not None:
        cfg.split_file = str(Path(args.split).resolve())
    cfg.amp = not args.no_amp
    cfg.augment = not args.no_augment
    cfg.data = [str(Path(p).expanduser().resolve()) for p in cfg.data]
    return cfg


def run_train(args: argparse.Namespace) -> int:
    """``train``: a new run in ``--output``."""
    from ..training.trainer import train

    cfg = config_from_args(args)
    with StopRequest(args.stop_file) as stop:
        result = train(cfg, ProgressReporter(args.progress), stop=stop)
    return _finish_training(result, args)


def run_resume(args: argparse.Namespace) -> int:
    """``resume RUN_DIR``: continue from ``checkpoints/last.pt`` with the saved config (plus overrides)."""
    from ..training.trainer import train

    run_dir = Path(args.run_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    cfg.output = str(run_dir)
    cfg.stop_after_epoch = 0
    for name in RESUME_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    with StopRequest(args.stop_file) as stop:
        result = train(cfg, ProgressReporter(args.progress), resume=True, stop=stop)
    return _finish_training(result, args)


def _finish_training(result: Any, args: argparse.Namespace) -> int:
    if is_main_process():
        fields = {
            "state": result.state,
            "run_dir": str(result.run_dir),
            "epochs_completed": result.epochs_completed,
            "global_step": result.global_step,
            "best_dice": result.best_dice,
            "best_epoch": result.best_epoch,
            "checkpoints": {
                "last": str(result.run_dir / "checkpoints" / "last.pt"),
                "best": str(result.run_dir / "checkpoints" / "best.pt") if result.best_epoch else None,
            },
            "message": result.message,
        }
        if args.progress == "json":
            ProgressReporter("json").emit("result", **fields)
        else:
            best = "n/a" if result.best_dice is None else f"{result.best_dice:.4f} (epoch {result.best_epoch})"
            print(f"{result.state}: {result.epochs_completed} epoch(s), best validation Dice {best}")
            print(f"run folder: {result.run_dir}")
    return result.exit_code


def run_prepare(args: argparse.Namespace) -> int:
    """``prepare``: check data, optionally write an MSD task folder and/or a split file."""
    check_fractions(args.val_fraction, args.test_fraction)
    cases = load_datalist(args.data, args.max_cases, strict=args.strict)
    reporter = ProgressReporter(args.progress)
    validate_cases(
        cases,
        check_values=not args.no_value_check,
        progress=lambda done, total: reporter.update("check", done / total, f"{done}/{total} cases"),
    )
    reporter.close()
    names = [c["case"] for c in cases]
    patients = {patient_id(n, args.patient_pattern) for n in names}
    result: dict[str, Any] = {"cases": len(cases), "patients": len(patients)}
    if args.msd_out:
        json_path = build_msd_layout(
            cases,
            Path(args.msd_out),
            name=args.name,
            description=args.description or "",
            link=not args.copy,
            overwrite=args.overwrite,
            check_values=False,
        )
        result["dataset_json"] = str(json_path)
    if args.split_out:
        if args.folds and args.folds > 1:
            split = make_kfold(names, args.folds, args.seed, args.test_fraction, args.patient_pattern)
        else:
            split = make_split(names, args.val_fraction, args.test_fraction, args.seed, args.patient_pattern)
        split_path = Path(args.split_out)
        if split_path.exists() and not args.overwrite:
            raise InputError(f"{split_path}: exists (use --overwrite to replace it)")
        split.save(split_path)
        result["split"] = str(split_path)
        result["folds"] = [{k: len(v) for k, v in fold.items()} for fold in split.folds]
        result["test"] = len(split.test)
    _print_result(args, result, f"{len(cases)} cases from {len(patients)} patients: checks passed")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate MODEL``: the full inference pipeline on a split's cases, scored against the labels."""
    from ..evaluation.evaluate import evaluate_cases, load_model, write_report

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.whole_ct:
        return _evaluate_whole_ct(args, device)
    bundle, networks = load_model(args.model, str(device))
    run_dir = _run_dir_of(args.model)
    run_cfg = TrainConfig.load(run_dir / "config.json") if run_dir else None
    cases = _cases_for(args, run_dir, run_cfg)
    options = SegmentOptions(
        tta=args.tta,
        device=str(device),
        threshold=args.threshold,
        min_lesion_ml=args.min_lesion_ml,
        restrict_to_lung=False if args.no_lung_filter else None,
        crop_to_lung=not args.no_lung_crop,
    )
    reporter = ProgressReporter(args.progress)
    rows, summary = evaluate_cases(bundle, networks, cases, options, reporter)
    reporter.close()
    out_dir = Path(args.output) if args.output else (run_dir / f"evaluation_{args.subset}" if run_dir else None)
    result: dict[str, Any] = {"summary": summary}
    if out_dir is not None:
        result["outputs"] = {k: str(v) for k, v in write_report(rows, summary, out_dir).items()}
    dice = summary.get("dice") or {}
    line = f"{summary['cases']} case(s), mean Dice {dice.get('mean', float('nan')):.4f}"
    _print_result(args, result, line)
    return 0


def _evaluate_whole_ct(args: argparse.Namespace, device: torch.device) -> int:
    """``evaluate MODEL --whole-ct``: every labelled whole CT, each with its fold's model when MODEL is a plan."""
    from ..evaluation.whole_ct import FoldPlan, evaluate_plan, read_plan
    from ..evaluation.whole_ct_cases import find_whole_ct_cases

    data_root = Path(args.whole_ct)
    if args.model.endswith(".json"):
        folds = read_plan(Path(args.model))
        if args.cases:
            folds = [
                FoldPlan(f.name, f.model, [c for c in f.cases if c in args.cases], f.weights, f.output) for f in folds
            ]
    else:
        names = [c.name for c in find_whole_ct_cases(data_root, args.cases)]
        folds = [FoldPlan("all", [args.model], names)]
    options = SegmentOptions(
        tta=args.tta,
        device=str(device),
        threshold=args.threshold,
        min_lesion_ml=args.min_lesion_ml,
        restrict_to_lung=False if args.no_lung_filter else None,
        crop_to_lung=not args.no_lung_crop,
    )
    out_dir = Path(args.output) if args.output else Path("whole_ct_evaluation")
    quiet = args.json or args.progress == "json"
    report = evaluate_plan(
        folds, data_root, out_dir, options, pictures=not args.no_pictures, log=(lambda _: None) if quiet else print
    )
    s = report["summary"]
    line = (
        f"{s['cases']} whole CT(s): {s['lesions_detected']}/{s['lesions']} lesions found, "
        f"mean lesion Dice {s['mean_lesion_dice_over_cases']:.3f} "
        f"(over lesions {s['mean_lesion_dice_over_lesions']:.3f}), "
        f"{s['false_positives_per_ct']:.2f} false positives per CT -> {out_dir / 'whole_ct.json'}"
    )
    _print_result(args, {"summary": s, "outputs": {"json": str(out_dir / "whole_ct.json")}}, line)
    return 0


def run_ensemble(args: argparse.Namespace) -> int:
    """``ensemble MEMBERS...``: weight and threshold search on the validation split."""
    from ..data.transforms import validation_transforms

    members = load_members(args.members)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = members[0].run_dir
    cases = _cases_for(args, run_dir, members[0].config)
    if not cases:
        raise InputError("no validation cases to search the ensemble on")
    transform = validation_transforms(members[0].config)
    items = Dataset(cases, transform)  # pre-processed lazily, one case at a time
    reporter = ProgressReporter(args.progress)
    networks = []
    for member in members:
        cfg, network = network_from_checkpoint(member.payload)
        networks.append((network.to(device), cfg.patch_size, cfg.overlap))
    probabilities, labels, names = predict_members(
        networks, items, device, lambda d, t: reporter.update("predict", 0.8 * d / t, f"{d}/{t}")
    )
    search = search_weights(
        probabilities,
        labels,
        step=args.step,
        thresholds=args.thresholds or DEFAULT_THRESHOLDS,
        progress=lambda d, t: reporter.update("search", 0.8 + 0.2 * d / t, f"{d}/{t} weight vectors"),
    )
    reporter.close()
    payload = {
        "members": [
            {"name": m.name, "checkpoint": str(m.checkpoint), "weight": w, "val_dice_alone": d}
            for m, w, d in zip(members, search.weights, search.member_dice)
        ],
        "threshold": search.threshold,
        "mean_dice": search.mean_dice,
        "equal_weights_dice": search.equal_weights_dice,
        "grid_step": args.step,
        "candidates": search.candidates,
        "subset": args.subset,
        "fold": args.fold if args.fold is not None else members[0].config.fold,
        "cases": names,
        "table": search.table,
    }
    write_json_atomic(Path(args.output), payload)
    weights = ", ".join(f"{m.name} {w:.2f}" for m, w in zip(members, search.weights))
    _print_result(
        args,
        {k: v for k, v in payload.items() if k != "table"} | {"output": str(args.output)},
        f"best weights: {weights}; threshold {search.threshold:.2f}; mean Dice {search.mean_dice:.4f} "
        f"(equal weights {search.equal_weights_dice:.4f}) on {len(names)} case(s) -> {args.output}",
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``export``: checkpoint(s) or an ensemble file to a model bundle."""
    ensemble = read_ensemble_file(Path(args.ensemble)) if args.ensemble else None
    if ensemble and args.members:
        raise InputError("give either members or --ensemble, not both")
    sources = [m["checkpoint"] for m in ensemble["members"]] if ensemble else args.members
    weights = args.weights or ([float(m["weight"]) for m in ensemble["members"]] if ensemble else None)
    members = load_members(sources, weights)
    threshold = args.threshold if args.threshold is not None else (ensemble or {}).get("threshold", 0.5)
    settings = OutputSettings(
        threshold=float(threshold),
        min_lesion_ml=args.min_lesion_ml,
        restrict_to_lung=not args.no_lung_filter,
        keep_largest=args.keep_largest,
        min_peak_probability=args.min_peak_probability,
        tta_flips=args.tta,
        overlap=args.overlap,
        patch_size=args.patch_size,
    )
    ensemble_info = None
    if ensemble:
        ensemble_info = {k: ensemble.get(k) for k in ("threshold", "mean_dice", "equal_weights_dice", "grid_step")}
        ensemble_info.update(subset=ensemble.get("subset"), fold=ensemble.get("fold"), cases=ensemble.get("cases", []))
    name = args.name or members[0].name
    path = export_bundle(
        members,
        name,
        Path(args.out) if args.out else None,
        settings,
        fp16=not args.fp32,
        overwrite=args.overwrite,
        version=args.model_version,
        description=args.description or "",
        command=args.command_line,
        ensemble=ensemble_info,
        licence=args.licence or "",
    )
    _print_result(
        args,
        {"bundle": str(path), "name": name, "members": [m.name for m in members]},
        f"wrote bundle {path}\nsegment with: lungtumorseg segment CT.nii.gz -o OUT --model {path}",
    )
    return 0


def _run_dir_of(model: str) -> Path | None:
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_file() and path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
        return path.parent.parent
    return None


def _cases_for(args: argparse.Namespace, run_dir: Path | None, run_cfg: TrainConfig | None) -> list[dict[str, Any]]:
    """Cases of ``--subset`` from ``--data``/``--split`` (defaults: the run's data and split.json)."""
    data = args.data or (run_cfg.data if run_cfg else None)
    if not data:
        raise InputError("--data is needed (the model is not a training run folder)")
    cases = load_datalist(data, args.max_cases)
    split_path = Path(args.split) if args.split else (run_dir / "split.json" if run_dir else None)
    if args.subset == "all" or split_path is None:
        return cases
    split = load_split(split_path)
    fold = args.fold if args.fold is not None else (run_cfg.fold if run_cfg else 0)
    names = split.subset(args.subset, fold)
    if args.max_cases:
        present = {c["case"] for c in cases}
        names = [n for n in names if n in present]
    return select_cases(cases, names, args.subset)


def _print_result(args: argparse.Namespace, result: dict[str, Any], line: str) -> None:
    if not is_main_process():
        return
    if getattr(args, "progress", None) == "json":
        ProgressReporter("json").emit("result", **result)
    elif getattr(args, "json", False):
        print(json.dumps(result, indent=2, default=str))
    else:
        print(line)
