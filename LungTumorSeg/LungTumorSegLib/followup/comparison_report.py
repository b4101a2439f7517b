"""The comparison's tables (comparison.json, comparison.csv) and its HTML report.

The HTML report is one self-contained file: the response and the rule that decided it, the target
lesions, every match, the non-RECIST volume change, the alignment and its residual, the side-by-side
pictures, then the two single-time-point reports (``report.render_html_report``) joined below.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping

from ..reporting.report import RESEARCH_USE_LINE, csv_text, json_safe
from .compare import Comparison
from .recist_response import CATEGORIES

CSV_COLUMNS = (
    "match_id",
    "match_type",
    "matched_by",
    "baseline_ids",
    "followup_ids",
    "target",
    "baseline_volume_ml",
    "followup_volume_ml",
    "volume_change_percent",
    "baseline_long_axis_mm",
    "followup_long_axis_mm",
    "long_axis_change_percent",
    "baseline_short_axis_mm",
    "followup_short_axis_mm",
    "recist_followup_mm",
    "overlap_ml",
    "centroid_distance_mm",
    "response",
)
_MATCH_COLUMNS = (
    ("match_id", "Match", "{}"),
    ("match_type", "Type", "{}"),
    ("target", "Target", "{}"),
    ("baseline_ids", "Baseline lesion(s)", "{}"),
    ("followup_ids", "Follow-up lesion(s)", "{}"),
    ("baseline_long_axis_mm", "Long axis before (mm)", "{:.1f}"),
    ("followup_long_axis_mm", "Long axis after (mm)", "{:.1f}"),
    ("long_axis_change_percent", "Change (%)", "{:+.1f}"),
    ("baseline_short_axis_mm", "Short axis before (mm)", "{:.1f}"),
    ("followup_short_axis_mm", "Short axis after (mm)", "{:.1f}"),
    ("baseline_volume_ml", "Volume before (ml)", "{:.2f}"),
    ("followup_volume_ml", "Volume after (ml)", "{:.2f}"),
    ("volume_change_percent", "Volume change (%, not RECIST)", "{:+.1f}"),
    ("matched_by", "Matched by", "{}"),
    ("centroid_distance_mm", "Centroid distance after alignment (mm)", "{:.1f}"),
)


def comparison_json(comparison: Comparison) -> str:
    """comparison.json: ``Comparison.to_dict()`` (response at the top level), non-finite numbers as null."""
    return json.dumps(json_safe(comparison.to_dict()), indent=2) + "\n"


def comparison_csv(comparison: Comparison) -> str:
    """comparison.csv: one row per match (lists of lesion ids joined with ';')."""
    return csv_text(list(CSV_COLUMNS), comparison.match_rows())


def render_comparison_html(
    comparison: Comparison,
    *,
    pictures: Mapping[str, bytes] | None = None,
    single_reports: Mapping[str, str] | None = None,
    inputs: Mapping[str, str] | None = None,
) -> str:
    """The HTML text of the comparison report.

    Args:
        comparison: the comparison.
        pictures: caption -> PNG bytes (the side-by-side pictures).
        single_reports: name -> the HTML of a single-time-point report, joined at the end (their own titles
            become section headings).
        inputs: label -> value lines under the title (input files, label sources, model).
    """
    esc = html.escape
    response = comparison.response
    change = response.change_percent
    volume_change = response.volume_change_percent
    summary = [
        ("Response (RECIST 1.1, target lesions)", f"{response.category}: {CATEGORIES[response.category]}"),
        ("Rule that decided", response.rule),
        ("Sum of diameters, baseline", f"{response.baseline_sum_mm:.1f} mm ({len(response.targets)} target(s))"),
        (
            "Sum of diameters, follow-up",
            f"{response.followup_sum_mm:.1f} mm ({response.change_mm:+.1f} mm"
            + (f", {change:+.1f} %)" if change is not None else ")"),
        ),
        ("New lesions (count for PD)", _ids(response.new_lesion_ids)),
        (
            f"New lesions under {response.new_lesion_min_mm:g} mm (equivocal, for the reader)",
            _ids(response.equivocal_new_lesion_ids),
        ),
        ("Non-target baseline lesions (for the reader)", _ids(response.non_target_baseline_ids)),
        (
            "Total tumour volume (not part of RECIST 1.1)",
            f"{response.baseline_volume_ml:.2f} ml -> {response.followup_volume_ml:.2f} ml"
            + (f" ({volume_change:+.1f} %)" if volume_change is not None else ""),
        ),
    ]
    targets = "".join(
        f"<tr><td>{t.number}</td><td>{t.baseline_id}</td><td>{esc(_ids(t.followup_ids))}</td>"
        f"<td>{esc(t.match_type)}</td><td>{t.baseline_mm:.1f}</td><td>{t.followup_mm:.1f}</td>"
        f"<td>{t.change_percent:+.1f}</td></tr>"
        for t in response.targets
    )
    head = "".join(f"<th>{esc(name)}</th>" for _, name, _ in _MATCH_COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(_format(row.get(key), fmt))}</td>" for key, _, fmt in _MATCH_COLUMNS) + "</tr>"
        for row in comparison.match_rows()
    )
    registration = comparison.alignment.to_dict()
    residual = registration.get("residual", {})
    alignment_rows = [
        ("Library and mode", f"{registration['library']}, {registration['mode']}"),
        ("Lung boundary distance before alignment", _distance(residual.get("before"))),
        ("Lung boundary distance after alignment", _distance(residual.get("after"))),
        ("Time", f"{registration['seconds']:.1f} s"),
    ]
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for caption, data in (pictures or {}).items()
    )
    joined = "".join(f'<section class="single">{_body(text)}</section>' for text in (single_reports or {}).values())
    created = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in (inputs or {}).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LungTumorSeg follow-up comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: left; }}
th {{ background: #eee; }}
.ruo {{ background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em; font-weight: bold; }}
.response {{ font-size: 1.3em; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }} img {{ max-width: 1100px; }}
section.single {{ border-top: 3px solid #888; margin-top: 2em; }}
</style></head><body>
<h1>LungTumorSeg follow-up comparison</h1>
<p class="ruo">{esc(RESEARCH_USE_LINE)}</p>
<p>Created {esc(created)}</p>
<table class="inputs">{table}</table>
<h2>Response</h2>
<p class="response"><b>{esc(response.category)}</b> ({esc(CATEGORIES[response.category])}): {esc(response.rule)}</p>
<table class="summary">{"".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary)}</table>
<p>The tool assesses the target lesions and new lesions only. Non-target lesions, lymph nodes (short axis
&ge; 15 mm), lesions outside the lungs, whether a new lesion is unequivocal, and the overall response are
for the reader.</p>
<h2>Target lesions</h2>
<table class="targets"><thead><tr><th>Target</th><th>Baseline lesion</th><th>Follow-up lesion(s)</th>
<th>Match</th><th>Baseline (mm)</th><th>Follow-up (mm)</th><th>Change (%)</th></tr></thead>
<tbody>{targets}</tbody></table>
<h2>All lesions</h2>
<table class="matches"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<p>Lesion ids are per scan (1 = largest at that time point). Split and merged groups sum the long axes and
volumes of their lesions; their short axis is the largest lesion's.</p>
<h2>Alignment</h2>
<table class="alignment">{"".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in alignment_rows)}</table>
<h2>Target lesions side by side</h2>
{figures or "<p>No target lesion is present at both time points.</p>"}
{_JOINED_NOTE if joined else ""}
{joined}
<p class="ruo">{esc(RESEARCH_USE_LINE)}</p>
</body></html>
"""


_JOINED_NOTE = """<p>Below, each scan's own report. It lists that scan on its own: its "Target" column and its sums
rank that scan's lesions (up to 5). The comparison follows the baseline's targets above (at most 2 per organ).</p>"""


def _body(document: str) -> str:
    """The body of an HTML report, its headings one level down, without its research-use banners."""
    start, end = document.find("<body>"), document.rfind("</body>")
    body = document[start + len("<body>") : end] if start >= 0 and end > start else document
    body = body.replace(f'<p class="ruo">{html.escape(RESEARCH_USE_LINE)}</p>', "")
    for level in (3, 2, 1):
        body = body.replace(f"<h{level}>", f"<h{level + 1}>").replace(f"</h{level}>", f"</h{level + 1}>")
    return body


def _distance(value) -> str:
    if not value:
        return "not measured"
    return f"mean {value['mean_mm']:.2f} mm, 95th percentile {value['p95_mm']:.2f} mm"


def _format(value, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return _ids(value)
    return fmt.format(value)


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids) if ids else "none"
