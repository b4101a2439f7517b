"""Evaluate a checkpoint or a bundle on cases through the full inference pipeline, on each CT's own grid.

Unlike the validation Dice during training (model grid, no post-processing), this runs exactly what
users get — ``LungTumorSegLib.segmentation.pipeline.segment`` with the bundle's pre- and post-processing — and scores
it with ``LungTumorSegLib.measurements.metrics.evaluate`` (Dice, HD95, NSD, volume and RECIST errors, lesion detection).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.progress import ProgressReporter
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.measurements.metrics import evaluate
from LungTumorSegLib.model.bundle import ModelBundle, find_bundle
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import segment

from ..config import write_json_atomic
from ..training.export import in_memory_bundle, load_members

SUMMARY_KEYS = ("dice", "hd95_mm", "nsd", "relative_volume_error", "recist_relative_error", "lesion_sensitivity")
CSV_KEYS = (
    "case",
    "dice",
    "hd95_mm",
    "nsd",
    "relative_volume_error",
    "pred_volume_ml",
    "gt_volume_ml",
    "recist_relative_error",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
    "seconds",
    "error",
)


def load_model(model: str, device: str = "cpu") -> tuple[ModelBundle, list]:
    """A bundle (folder or installed name) or checkpoint(s) (run folder or .pt) with networks loaded."""
    path = Path(model).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():
        bundle = find_bundle(str(path))
        return bundle, bundle.load_networks(device)
    if path.is_file() or (path.is_dir() and (path / "checkpoints").is_dir()):
        bundle, networks = in_memory_bundle(load_members([path]))
        return bundle, [(spec, network.to(device)) for spec, network in networks]
    bundle = find_bundle(model)
    return bundle, bundle.load_networks(device)


def evaluate_cases(
    bundle: ModelBundle,
    networks: list,
    cases: Sequence[dict[str, Any]],
    options: SegmentOptions,
    reporter: ProgressReporter | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Segment and score every case; a case that fails is recorded with its error, not fatal.

    Returns:
        Per-case rows (``metrics.evaluate`` fields plus ``case``, ``seconds``, ``error``) and a summary
        (mean, median and standard deviation of the main metrics, counts).
    """
    reporter = reporter or ProgressReporter("none")
    rows = []
    for index, case in enumerate(cases):
        reporter.update("evaluate", index / max(len(cases), 1), case["case"])
        tick = time.perf_counter()
        try:
            ct = load_volume(case["image"])
            truth = load_volume(case["label"], dtype=None)
            result = segment(ct, bundle, options, networks=networks)
            row: dict[str, Any] = {"case": case["case"], **evaluate(result.label, truth)}
            row.pop("lesion_matches", None)
        except InputError as exc:
            row = {"case": case["case"], "error": str(exc)}
            reporter.log("warning", f"{case['case']}: {exc}")
        row["seconds"] = round(time.perf_counter() - tick, 3)
        rows.append(row)
    reporter.update("evaluate", 1.0, "done")
    return rows, summarise(rows, bundle)


def summarise(rows: Sequence[dict[str, Any]], bundle: ModelBundle) -> dict[str, Any]:
    """Mean / median / std of the main metrics over the cases that ran (undefined values skipped)."""
    ok = [r for r in rows if "error" not in r]
    summary: dict[str, Any] = {
        "model": bundle.name,
        "cases": len(rows),
        "failed": len(rows) - len(ok),
        "threshold": bundle.output.get("threshold", 0.5),
    }
    for key in SUMMARY_KEYS:
        values = [float(r[key]) for r in ok if r.get(key) is not None and math.isfinite(float(r[key]))]
        summary[key] = (
            {
                "mean": float(np.mean(values)),
                "median": float(np.median(values)),
                "std": float(np.std(values)),
                "n": len(values),
            }
            if values
            else None
        )
    return summary


def write_report(rows: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``evaluation.csv`` (one row per case) and ``evaluation.json`` (summary and rows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_KEYS})
    csv_path = out_dir / "evaluation.csv"
    tmp = csv_path.with_name(".evaluation.csv.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, csv_path)
    json_path = out_dir / "evaluation.json"
    write_json_atomic(json_path, {"summary": summary, "cases": list(rows)})
    return {"csv": csv_path, "json": json_path}
