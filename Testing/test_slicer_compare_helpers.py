"""The Slicer "Compare with baseline" section's pure helpers, against the real engine process."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, synthetic_chest

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import save_volume
from LungTumorSegLib.slicer_glue.compare_helpers import (
    CompareSettings,
    build_compare_command,
    compare_table_value,
    comparison_rows,
    format_compare_cell,
    response_summary_text,
    run_engine,
    tumor_segment_ids,
)
from LungTumorSegLib.slicer_glue.segment_helpers import engine_environment


def test_the_command_names_every_choice():
    command = build_compare_command(
        "python", "b.nrrd", "f.nrrd", "out", CompareSettings(registration="deformable", tta=4), "bl.nrrd", None
    )
    assert command[:6] == ["python", "-m", "LungTumorSegLib", "compare", "b.nrrd", "f.nrrd"]
    assert command[command.index("--registration") + 1] == "deformable"
    assert command[command.index("--baseline-label") + 1] == "bl.nrrd" and "--followup-label" not in command
    assert command[command.index("--progress") + 1] == "json" and "--overwrite" in command
    assert command[command.index("--tta") + 1] == "4"
    with pytest.raises(ValueError, match="registration"):
        build_compare_command("python", "b", "f", "o", CompareSettings(registration="bspline"))


def test_the_lesion_segments_are_the_tumour_when_there_are_some():
    assert tumor_segment_ids([("s1", "Lung", ""), ("s2", "Lung tumor", "")]) == ["s2"]
    assert tumor_segment_ids([("s1", "Lung", ""), ("s2", "Lung tumor 1", ""), ("s3", "Lung tumor 2", "")]) == [
        "s2",
        "s3",
    ]
    assert tumor_segment_ids([("s1", "Candidates", "candidates"), ("s2", "renamed", "lesion")]) == ["s2"]
    assert tumor_segment_ids([("a", "nodule 1", ""), ("b", "nodule 2", "")]) == ["a", "b"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two phantom CTs with nodule labels: the follow-up has a shrunk nodule and a new one (PD)."""
    folder = tmp_path_factory.mktemp("phantoms")
    paths = {}
    for name, nodules in (
        ("baseline", (((-30.0, 0.0, 0.0), 8.0),)),
        ("followup", (((-30.0, 0.0, 0.0), 6.0), ((30.0, 10.0, 5.0), 5.0))),
    ):
        ct, mask = synthetic_chest(nodules=nodules)
        paths[name] = save_volume(ct, folder / f"{name}.nrrd")
        paths[f"{name}_label"] = save_volume(Volume(mask.astype(np.uint8), ct.affine), folder / f"{name}_label.nrrd")
    return paths


def _command(pair, out):
    return build_compare_command(
        sys.executable,
        pair["baseline"],
        pair["followup"],
        out,
        CompareSettings(registration="none", pictures=False),
        pair["baseline_label"],
        pair["followup_label"],
    )


def test_run_engine_reports_progress_and_the_result_and_the_rows_read_back(tmp_path, pair):
    events = []
    env = engine_environment(module_dir=ROOT / "LungTumorSeg")
    run = run_engine(_command(pair, tmp_path), env=env, on_event=events.append)
    assert run.failure() is None, run.stderr
    assert any(e.event == "progress" for e in events)
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert run.result["summary"]["response"]["category"] == data["response"]["category"] == "PD"

    rows = comparison_rows(data)
    assert [r["match_type"] for r in rows] == ["matched", "new"]
    baseline_centroid = data["baseline"]["lesions"][0]["centroid_ras"]
    assert rows[0]["location_ras"] == baseline_centroid
    new_centroid = data["followup"]["lesions"][rows[1]["followup_ids"][0] - 1]["centroid_ras"]
    np.testing.assert_allclose(rows[1]["location_ras"], new_centroid, atol=1e-6)  # identity alignment
    assert format_compare_cell("long_axis_change_percent", rows[0]["long_axis_change_percent"]).startswith("-")
    assert format_compare_cell("baseline_ids", [1, 2]) == "1, 2" and format_compare_cell("target", None) == ""
    assert compare_table_value("baseline_ids", rows[0]) == format_compare_cell("baseline_ids", rows[0]["baseline_ids"])
    assert compare_table_value("long_axis_change_percent", rows[0]) < 0
    assert np.isnan(compare_table_value("baseline_long_axis_mm", rows[1]))  # a new lesion has no baseline
    text = response_summary_text(data)
    assert text.startswith("RECIST 1.1: PD (progressive disease) - new lesion") and "not RECIST" in text


def test_run_engine_cancel_kills_the_process(tmp_path):
    script = "import json, time\nprint(json.dumps({'event': 'progress', 'fraction': 0.1}), flush=True)\ntime.sleep(60)"
    started = time.perf_counter()
    run = run_engine([sys.executable, "-c", script], should_cancel=lambda: True)
    assert run.cancelled and run.failure() is None and time.perf_counter() - started < 30


def test_a_failing_run_says_why():
    script = "import json, sys\nprint(json.dumps({'event': 'error', 'message': 'b.nrrd: no such file'}))\nsys.exit(2)"
    run = run_engine([sys.executable, "-c", script])
    assert run.exit_code == 2 and run.failure() == "b.nrrd: no such file"
    crash = run_engine([sys.executable, "-c", "import sys; sys.stderr.write('Traceback: boom'); sys.exit(1)"])
    assert "code 1" in crash.failure() and "boom" in crash.failure()
