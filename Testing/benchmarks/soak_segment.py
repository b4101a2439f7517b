"""Soak: ``lungtumorseg segment`` many times in one process; memory must not grow and no temporary file may stay.

Runs the command line in-process (``main(argv)``, as a long-lived caller such as a batch script would)
with the bundled model: N times on the demo nodule, then M times on the full R01-001 CT, each run
replacing the previous outputs (``--overwrite``). After every run it records the resident memory
(VmRSS, after ``gc.collect()``). It reports, per input, the RSS after the first run (the baseline,
measured in the same process) and the growth from there to the last run, with the per-run slope of a
least-squares line through the later runs; and it lists every file left in the output folder that is
not an output, and every file left in the process's private temporary folder.

Target: growth within noise (a few MB, no steady slope) and no leftover files.

    python Testing/benchmarks/soak_segment.py [--nodule-runs 50] [--ct-runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
PRIVATE_TMP = Path(tempfile.mkdtemp(prefix="soak-tmp-"))
os.environ["TMPDIR"] = str(PRIVATE_TMP)  # everything the engine and its libraries put in temp lands here
tempfile.tempdir = str(PRIVATE_TMP)

from LungTumorSegLib.cli.main import main as cli_main  # noqa: E402
from LungTumorSegLib.io.image_names import image_stem  # noqa: E402
from LungTumorSegLib.reporting.case_outputs import output_set_names  # noqa: E402

DEMO_NODULE = ROOT / "LungTumorSeg" / "Resources" / "Sample" / "demo_nodule.nii.gz"
R01 = ROOT.parent / "shared" / "data" / "chest-ct" / "nsclc-radiogenomics-R01-001" / "ct.nii.gz"


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def soak(ct: Path, runs: int, out: Path, threads: int) -> list[float]:
    """RSS after each of ``runs`` segment runs of ``ct`` into ``out``."""
    argv = ["segment", str(ct), "-o", str(out), "--overwrite", "--progress", "none", "--threads", str(threads)]
    samples = []
    for index in range(runs):
        tick = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(argv)
        if code != 0:
            raise SystemExit(f"run {index + 1} on {ct.name} exited {code}")
        gc.collect()
        samples.append(rss_mb())
        print(f"  {ct.name} run {index + 1}/{runs}: {time.perf_counter() - tick:.1f} s, RSS {samples[-1]:.0f} MB")
    return samples


def leftovers(out: Path, stems: list[str]) -> list[str]:
    """Files in ``out`` that no output set names, and anything left in the private temp folder."""
    expected = {name for stem in stems for name in output_set_names(stem)}
    stray = [str(p) for p in out.rglob("*") if p.name not in expected]
    return stray + [str(p) for p in PRIVATE_TMP.rglob("*")]


def report(name: str, samples: list[float]) -> None:
    """Baseline (first run), growth to the last run, and the slope over the later runs."""
    later = samples[len(samples) // 5 :] if len(samples) >= 5 else samples
    slope = float(np.polyfit(np.arange(len(later)), later, 1)[0]) if len(later) >= 2 else 0.0
    growth = samples[-1] - samples[0]
    print(
        f"{name:<14} runs {len(samples):>3}  RSS first {samples[0]:7.0f} MB  last {samples[-1]:7.0f} MB  "
        f"growth {growth:+6.0f} MB ({growth / samples[0]:+.1%})  slope {slope:+.2f} MB/run  peak {max(samples):.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodule-runs", type=int, default=50)
    parser.add_argument("--ct-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the output folder (removed by default)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="soak-out-", dir=PRIVATE_TMP.parent))
    print(f"outputs in {out}, private temp folder {PRIVATE_TMP}; RSS at start {rss_mb():.0f} MB")
    results = {"demo nodule": soak(DEMO_NODULE, args.nodule_runs, out, args.threads)}
    stems = [image_stem(DEMO_NODULE)]
    if args.ct_runs and R01.exists():
        results["R01-001 CT"] = soak(R01, args.ct_runs, out, args.threads)
        stems.append(image_stem(R01))
    elif args.ct_runs:
        print(f"R01-001 skipped: {R01} missing")
    print()
    for name, samples in results.items():
        report(name, samples)
    stray = leftovers(out, stems)
    print(f"leftover files: {len(stray)}" + "".join(f"\n  {path}" for path in stray))
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(PRIVATE_TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
