"""Measurement and evaluation tables (JSON, CSV) and a self-contained HTML report.

Every writer checks all of its target files first and raises OutputError if one exists and
``overwrite`` is false, so a run never leaves a half-replaced set of outputs. Files are written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..core.errors import OutputError
from ..io.output_files import atomic_path
from ..measurements.lesion_measurements import CaseMeasurements

RESEARCH_USE_LINE = "For research use only. Not a medical device; not for diagnosis or treatment decisions."
_LESION_COLUMNS = (
    ("lesion_id", "Lesion", "{}"),
    ("volume_ml", "Volume (ml)", "{:.2f}"),
    ("long_axis_mm", "Long axis (mm)", "{:.1f}"),
    ("short_axis_mm", "Short axis (mm)", "{:.1f}"),
    ("max_diameter_3d_mm", "3D max diameter (mm)", "{:.1f}"),
    ("axial_slice_index", "Axial slice", "{}"),
    ("mean_hu", "Mean HU", "{:.0f}"),
    ("mean_entropy", "Mean entropy (bits)", "{:.3f}"),
    ("max_entropy", "Max entropy (bits)", "{:.3f}"),
    ("measurable", "RECIST measurable", "{}"),
)


def measurement_table_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The files ``write_measurement_tables`` writes: keys ``json``, ``lesions_csv``, ``summary_csv``."""
    out = Path(out_dir)
    return {
        "json": out / f"{stem}_measurements.json",
        "lesions_csv": out / f"{stem}_lesions.csv",
        "summary_csv": out / f"{stem}_summary.csv",
    }


def write_measurement_tables(
    case: CaseMeasurements, out_dir: str | os.PathLike, stem: str, overwrite: bool = False
) -> dict[str, Path]:
    """Write the measurements as JSON (case + lesions), a lesion CSV (one row per lesion) and a summary CSV.

    Raises:
        OutputError: a target exists and ``overwrite`` is false, or the folder is not writable.
    """
    paths = measurement_table_paths(out_dir, stem)
    check_targets(paths.values(), overwrite)
    targets = set(case.target_lesion_ids)
    rows = [{**lesion.to_row(), "target_lesion": lesion.lesion_id in targets} for lesion in case.lesions]
    columns = list(rows[0]) if rows else ["lesion_id"]
    summary = {key: _cell(value) for key, value in case.summary().items()}
    write_text_atomic(paths["json"], json.dumps(json_safe(case.to_dict()), indent=2) + "\n")
    write_text_atomic(paths["lesions_csv"], csv_text(columns, rows))
    write_text_atomic(paths["summary_csv"], csv_text(list(summary), [summary]))
    return paths


def write_evaluation_tables(
    result: Mapping, out_dir: str | os.PathLike, stem: str, overwrite: bool = False
) -> dict[str, Path]:
    """Write an ``metrics.evaluate`` result as JSON and a one-row CSV of its scalar metrics.

    Returns:
        ``{"json": ..., "csv": ...}``.
    """
    out = Path(out_dir)
    paths = {"json": out / f"{stem}_evaluation.json", "csv": out / f"{stem}_evaluation.csv"}
    check_targets(paths.values(), overwrite)
    scalars = {key: _cell(value) for key, value in result.items() if not isinstance(value, (list, dict))}
    write_text_atomic(paths["json"], json.dumps(json_safe(dict(result)), indent=2) + "\n")
    write_text_atomic(paths["csv"], csv_text(list(scalars), [scalars]))
    return paths


def write_html_report(
    case: CaseMeasurements,
    path: str | os.PathLike,
    *,
    images: Mapping[str, bytes | str | os.PathLike] | None = None,
    inputs: Mapping[str, str] | None = None,
    title: str = "LungTumorSeg tumour measurements",
    overwrite: bool = False,
    candidates: Sequence[Mapping] | None = None,
) -> Path:
    """Write a single-file HTML report: case summary, lesion table and PNG images embedded as data URIs.

    Args:
        case: the measurements.
        path: the .html file to write.
        images: caption -> PNG bytes or PNG file path (e.g. the overlay and the 3D snapshot).
        inputs: label -> value lines shown under the title (input files, model, ...).
        title: page title.
        overwrite: replace an existing file.
        candidates: the regions listed but not reported (``Candidate.to_dict()``), shown in their own table.

    Raises:
        OutputError: the file exists and ``overwrite`` is false, or it cannot be written.
    """
    path = Path(path)
    check_targets([path], overwrite)
    text = render_html_report(case, images=images, inputs=inputs, title=title, candidates=candidates)
    write_text_atomic(path, text)
    return path


def render_html_report(
    case: CaseMeasurements,
    *,
    images: Mapping[str, bytes | str | os.PathLike] | None = None,
    inputs: Mapping[str, str] | None = None,
    title: str = "LungTumorSeg tumour measurements",
    candidates: Sequence[Mapping] | None = None,
) -> str:
    """The HTML text of ``write_html_report``."""
    esc = html.escape
    summary = case.summary()
    targets = set(case.target_lesion_ids)
    head = "".join(f"<th>{esc(name)}</th>" for _, name, _ in _LESION_COLUMNS) + "<th>Target</th><th>Note</th>"
    body = []
    for lesion in case.lesions:
        values = lesion.to_dict()
        cells = "".join(f"<td>{esc(_format(values.get(key), fmt))}</td>" for key, _, fmt in _LESION_COLUMNS)
        note = esc(lesion.not_measurable_reason)
        body.append(f"<tr>{cells}<td>{'yes' if lesion.lesion_id in targets else ''}</td><td>{note}</td></tr>")
    summary_rows = [
        ("Lesions", f"{case.lesion_count} ({case.measurable_count} RECIST-measurable)"),
        ("Total tumour volume", f"{case.total_volume_ml:.2f} ml"),
        (
            "Sum of longest diameters (up to 5 targets)",
            f"{case.sum_longest_diameters_mm:.1f} mm (lesions {_ids(case.target_lesion_ids)})",
        ),
        (
            "Sum of longest diameters, RECIST 1.1 strict (2 per organ)",
            f"{case.sum_longest_diameters_recist_strict_mm:.1f} mm "
            f"(lesions {_ids(case.target_lesion_ids_recist_strict)})",
        ),
        ("Voxel spacing", " x ".join(f"{s:.3f}" for s in case.spacing_mm) + " mm"),
        ("Slice thickness (axial spacing)", f"{case.slice_thickness_mm:.2f} mm"),
        ("Diameters measured across", summary["diameter_convention"]),
    ]
    input_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in (inputs or {}).items())
    figures = []
    for caption, image in (images or {}).items():
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.append(
            f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
        )
    created = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: left; }}
th {{ background: #eee; }}
.ruo {{ background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em; font-weight: bold; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }} img {{ max-width: 720px; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p class="ruo">{esc(RESEARCH_USE_LINE)}</p>
<p>Created {esc(created)}</p>
<table class="inputs">{input_rows}</table>
<h2>Case summary</h2>
<table class="summary">{"".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows)}</table>
<h2>Lesions</h2>
<table class="lesions"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
<p>Lesion 1 is the largest by volume. RECIST long axis: longest diameter on an axial slice; short axis:
longest diameter perpendicular to it on the same slice; measurable: long axis &ge; 10 mm and &ge; 2 &times;
slice thickness. Targets: measurable lesions, longest first, at most 5.</p>
{_candidates_section(candidates) if candidates is not None else ""}
<h2>Images</h2>
{"".join(figures) if figures else "<p>No images.</p>"}
<p class="ruo">{esc(RESEARCH_USE_LINE)}</p>
</body></html>
"""


def _candidates_section(candidates: Sequence[Mapping]) -> str:
    """The candidates table: regions the model gives some probability to that the preset did not report."""
    if not candidates:
        return "<h2>Candidates</h2><p>No other region reached the preset's candidate level.</p>"
    rows = "".join(
        f"<tr><td>{c['label']}</td><td>{c['peak_probability']:.2f}</td><td>{c['volume_ml']:.2f}</td>"
        f"<td>{', '.join(f'{v:.1f}' for v in c['centroid_ras'])}</td></tr>"
        for c in candidates
    )
    return (
        "<h2>Candidates (not reported: review them)</h2>"
        "<table class='candidates'><thead><tr><th>Candidate</th><th>Peak probability</th><th>Volume (ml)</th>"
        f"<th>Centroid (RAS mm)</th></tr></thead><tbody>{rows}</tbody></table>"
        "<p>Regions the model gives some probability to that the sensitivity preset did not report as lesions, "
        "strongest first (label values of the <code>_candidates</code> map). Accept a candidate in Slicer and "
        "outline it with the box tool, or dismiss it.</p>"
    )


def check_targets(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise OutputError if any of ``paths`` exists and ``overwrite`` is false."""
    if overwrite:
        return
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        raise OutputError(f"{existing[0]}: file exists (pass --overwrite to replace it)")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of ``write_bytes_atomic``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def csv_text(columns: list[str], rows: list[Mapping]) -> str:
    """CSV text with a header of ``columns`` and one line per row (lists joined with ';', None empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    return buffer.getvalue()


def _cell(value):
    """CSV cell: lists joined with ';', None and non-finite numbers empty."""
    if isinstance(value, (list, tuple)):
        return ";".join(str(_cell(v)) for v in value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def json_safe(value):
    """Replace non-finite floats by None (JSON has no inf/NaN)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids) if ids else "none"
