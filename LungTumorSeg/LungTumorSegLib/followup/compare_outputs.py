"""The files ``compare`` writes, all-or-nothing, into one folder.

- ``comparison.json`` (top-level ``"response"``), ``comparison.csv``, ``comparison_report.html``;
- ``comparison_transform.h5``: the alignment as an ITK transform (baseline to follow-up points; Slicer
  applies it to the follow-up volume to overlay it on the baseline);
- ``comparison_target_<n>.png``: target ``n`` at both time points with its RECIST lines;
- per time point (``baseline``, ``followup``): the single-time-point tables and report, as ``measure``
  writes them (``<tp>_measurements.json``, ``<tp>_lesions.csv``, ``<tp>_summary.csv``, ``<tp>_overlay.png``,
  ``<tp>_report.html``), and the segmentation maps when the label was segmented here (``<tp>_tumor``,
  ``<tp>_probability``, ``<tp>_entropy``, ``<tp>_mutual_information``).
"""

from __future__ import annotations

from pathlib import Path

from ..io.image_io import save_volume
from ..io.output_files import OutputSet
from ..reporting.case_outputs import MAPS
from ..reporting.overlay import overlay_png
from ..reporting.report import measurement_table_paths, render_html_report, write_measurement_tables
from ..segmentation.pipeline import SegmentationResult
from .compare import Comparison, TimePoint
from .comparison_pictures import side_by_side_png, target_matches
from .comparison_report import comparison_csv, comparison_json, render_comparison_html

TIME_POINTS = ("baseline", "followup")
FIXED = {
    "comparison_json": "comparison.json",
    "comparison_csv": "comparison.csv",
    "report": "comparison_report.html",
    "transform": "comparison_transform.h5",
}


def output_names(segmented: dict[str, bool], suffix: str = ".nii.gz") -> list[str]:
    """The file names known before the run (the target pictures depend on the result)."""
    names = list(FIXED.values())
    for stem in TIME_POINTS:
        names += [path.name for path in measurement_table_paths(".", stem).values()]
        names += [f"{stem}_report.html", f"{stem}_overlay.png"]
        if segmented.get(stem):
            names += [f"{stem}_{kind}{suffix}" for kind in MAPS]
    return names


def write_compare_outputs(
    comparison: Comparison,
    out_dir: Path,
    *,
    segmentations: dict[str, SegmentationResult | None] | None = None,
    suffix: str = ".nii.gz",
    pictures: bool = True,
    overwrite: bool = False,
    inputs: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write every output; nothing is replaced unless ``overwrite``, and a failure leaves ``out_dir`` as it was.

    Args:
        comparison: the comparison.
        out_dir: output folder.
        segmentations: per time point, the segmentation made here (its maps are written), or None.
        suffix: image suffix of the maps (``.nii.gz`` or ``.nrrd``).
        pictures: write the PNG pictures (the reports then have no images).
        overwrite: replace existing files.
        inputs: label -> value lines for the report header.

    Returns:
        Final paths by kind (``comparison_json``, ``report``, ``transform``, ``target_<n>``,
        ``<tp>_report``, ``<tp>_tumor``, ...).
    """
    segmentations = segmentations or {}
    kinds: dict[str, str] = {}
    with OutputSet(out_dir, overwrite) as outputs:
        outputs.path(FIXED["transform"])
        comparison.alignment.write(outputs.staging / FIXED["transform"])
        kinds[FIXED["transform"]] = "transform"
        single_reports = {}
        for stem, point in zip(TIME_POINTS, (comparison.baseline, comparison.followup)):
            result = segmentations.get(stem)
            if result is not None:
                for kind in MAPS:
                    name = f"{stem}_{kind}{suffix}"
                    volume = getattr(result, kind if kind != "tumor" else "label")
                    outputs.write(name, lambda target, v=volume: save_volume(v, target, overwrite=True))
                    kinds[name] = f"{stem}_{kind}"
            for kind, table in write_measurement_tables(point.case, outputs.staging, stem, overwrite=True).items():
                outputs.adopt(table.name)
                kinds[table.name] = f"{stem}_{kind}"
            images = {}
            if pictures and point.case.lesion_count:
                png = overlay_png(point.label, point.ct, point.entropy, point.case)
                outputs.path(f"{stem}_overlay.png").write_bytes(png)
                kinds[f"{stem}_overlay.png"] = f"{stem}_overlay"
                images["Axial slice with the largest tumour area"] = png
            title = f"{'Baseline' if stem == 'baseline' else 'Follow-up'} scan"
            single_reports[stem] = render_html_report(point.case, images=images, inputs=_inputs(point), title=title)
            outputs.path(f"{stem}_report.html").write_text(single_reports[stem], encoding="utf-8")
            kinds[f"{stem}_report.html"] = f"{stem}_report"
        side_by_side = {}
        if pictures:
            for target, match in target_matches(comparison):
                name = f"comparison_target_{target.number}.png"
                png = side_by_side_png(comparison, target)
                outputs.path(name).write_bytes(png)
                kinds[name] = f"target_{target.number}"
                side_by_side[f"Target {target.number} ({match.match_type})"] = png
        outputs.path(FIXED["comparison_json"]).write_text(comparison_json(comparison), encoding="utf-8")
        outputs.path(FIXED["comparison_csv"]).write_text(comparison_csv(comparison), encoding="utf-8")
        report = render_comparison_html(comparison, pictures=side_by_side, single_reports=single_reports, inputs=inputs)
        outputs.path(FIXED["report"]).write_text(report, encoding="utf-8")
        kinds.update({FIXED[k]: k for k in ("comparison_json", "comparison_csv", "report")})
        final = outputs.commit()
    return {kinds[name]: path for name, path in final.items()}


def _inputs(point: TimePoint) -> dict[str, str]:
    names = {"ct": "CT", "label": "Label", "model": "Model"}
    return {names.get(key, key): str(value) for key, value in point.info.items()}
