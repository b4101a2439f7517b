"""Simulated-user evaluation of box prompts (LiteMedSAM) on the shared whole CTs: one command per lesion.

Each reference lesion (a 26-connected component of a case's ``tumor.nii.gz``) gets the box a user would draw:
its 3D bounding box grown by 10 % of its size on every side (RAS mm). The script runs the real command line,
``lungtumorseg segment CT -o OUT --box R0 A0 S0 R1 A1 S1``, in a fresh process per lesion, and reports per lesion:
Dice and volume error against the reference, the slices segmented, whether the HU gate ran and whether the
network's mask reached past the box, the command's wall time and CPU time, the engine's own time, and the
process's peak RSS (``wait4``). Voxels of nodules that only one LIDC reader marked (in ``tumor_votes`` but in no
``tumor`` lesion, e.g. LIDC-IDRI-0003's 32 mm nodule) are left out of the scoring (an ignore region).
It also draws each lesion's reference (green) and result (red) outlines with the box (yellow) on three slices.

    python Testing/benchmarks/eval_box_prompt.py [--threads 2] [--cases lidc-idri-0001 ...]
        [--hu-gate auto|on|off] [--pictures docs/images/box_tool] [--table out/box_eval/table.md]

Other whole CTs in the same layout (``<folder>/<case>/ct.nii.gz`` + ``tumor.nii.gz``) are scored with
``--data <folder> --cases <case> ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "LungTumorSeg")]

from LungTumorSegLib.core.volume import Volume  # noqa: E402
from LungTumorSegLib.io.image_io import load_volume  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "chest-ct"
MARGIN = 0.1


def reference_lesions(tumor: Volume) -> list[np.ndarray]:
    """The 26-connected components of a reference label (the lesions a user would box), in label order."""
    labels, count = ndimage.label(tumor.array > 0, structure=np.ones((3, 3, 3), bool))
    return [labels == n for n in range(1, count + 1)]


def ignore_region(case: Path, tumor: Volume) -> np.ndarray | None:
    """Nodules that only the votes map holds (marked by too few readers for ``tumor``): neither right nor wrong."""
    votes_path = case / "tumor_votes.nii.gz"
    if not votes_path.exists():
        return None
    labels, count = ndimage.label(load_volume(votes_path).array > 0, structure=np.ones((3, 3, 3), bool))
    inside = np.unique(labels[tumor.array > 0])
    ignored = np.isin(labels, [n for n in range(1, count + 1) if n not in inside])
    return ignored if ignored.any() else None


def user_box(reference: Volume, mask: np.ndarray, margin: float = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """RAS corners of the lesion's voxel box (outer voxel edges) grown by ``margin`` of its size per side."""
    ijk = np.argwhere(mask)
    low, high = ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5
    corners = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])])
    ras = reference.voxel_to_ras(corners)
    first, last = ras.min(axis=0), ras.max(axis=0)
    grow = margin * (last - first)
    return first - grow, last + grow


def run_command(command: list[str]) -> dict:
    """Run a command; its wall and CPU seconds and peak RSS (MB) from ``wait4``."""
    tick = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {err.read()[-2000:]}")
    return {
        "wall_s": round(time.perf_counter() - tick, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def score(prediction: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None) -> tuple[float, float]:
    """Dice and relative volume error, ignoring ``ignore`` voxels."""
    if ignore is not None:
        prediction = prediction & ~ignore
    overlap = np.count_nonzero(prediction & reference)
    dice = 2 * overlap / (np.count_nonzero(prediction) + np.count_nonzero(reference))
    return dice, np.count_nonzero(prediction) / np.count_nonzero(reference) - 1.0


def draw(path: Path, ct: Volume, reference: np.ndarray, prediction: np.ndarray, corners, title: str) -> None:
    """Three axial slices (a quarter, half and three quarters through the reference) with the outlines and box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nibabel import orientations as ornt

    # radiological display: RAS-aligned array, then rows anterior->posterior, columns patient right->left
    transform = ornt.ornt_transform(ornt.io_orientation(ct.affine), ornt.axcodes2ornt("RAS"))

    def display(array: np.ndarray) -> np.ndarray:
        return np.transpose(ornt.apply_orientation(array, transform)[::-1, ::-1, :], (2, 1, 0))

    hu, ref, pred = display(ct.array), display(reference), display(prediction)
    ras_affine = ct.affine @ ornt.inv_ornt_aff(transform, ct.shape)
    inverse = np.linalg.inv(ras_affine)
    ijk = np.array(corners) @ inverse[:3, :3].T + inverse[:3, 3]
    ni, nj, _ = ref.shape[2], ref.shape[1], ref.shape[0]
    x0, x1 = sorted(ni - 1 - ijk[:, 0])
    y0, y1 = sorted(nj - 1 - ijk[:, 1])
    zs = np.flatnonzero(ref.any(axis=(1, 2)))
    picks = [int(zs[int(round(f * (len(zs) - 1)))]) for f in (0.25, 0.5, 0.75)]
    pad = max(15, int(0.3 * max(x1 - x0, y1 - y0)))
    rows = slice(max(0, int(y0) - pad), int(y1) + pad)
    columns = slice(max(0, int(x0) - pad), int(x1) + pad)
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for axis, z in zip(axes, picks):
        axis.imshow(np.clip((hu[z, rows, columns] + 910.0) / 1500.0, 0, 1), cmap="gray", interpolation="nearest")
        if ref[z, rows, columns].any():
            axis.contour(ref[z, rows, columns], [0.5], colors="lime", linewidths=1.2)
        if pred[z, rows, columns].any():
            axis.contour(pred[z, rows, columns], [0.5], colors="red", linewidths=1.2)
        box = plt.Rectangle((x0 - columns.start, y0 - rows.start), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1)
        axis.add_patch(box)
        axis.set_title(f"slice {z}", fontsize=8)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)  # a third of the bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of cases (<case>/ct.nii.gz, tumor.nii.gz)")
    parser.add_argument("--cases", nargs="+", help="case folder names (default: every case with a tumor.nii.gz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hu-gate", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--work", type=Path, help="where the command writes its outputs (default: a temporary folder)")
    parser.add_argument("--pictures", type=Path, help="write one PNG per lesion here")
    parser.add_argument("--table", type=Path, help="write the table (Markdown) and <table>.json here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="box-eval-"))
    cases = args.cases or sorted(p.name for p in args.data.iterdir() if (p / "tumor.nii.gz").exists())
    rows = []
    for name in cases:
        case = args.data / name
        tumor = load_volume(case / "tumor.nii.gz")
        ignore = ignore_region(case, tumor)
        ct = None
        for number, reference in enumerate(reference_lesions(tumor), start=1):
            first, last = user_box(tumor, reference)
            out = work / f"{name}_{number}"
            command = [sys.executable, "-m", "LungTumorSegLib", "segment", str(case / "ct.nii.gz"), "-o", str(out)]
            command += ["--box", *(f"{v:.2f}" for v in (*first, *last)), "--threads", str(args.threads)]
            command += ["--hu-gate", args.hu_gate, "--overwrite", "--progress", "none"]
            measured = run_command(command)
            summary = json.loads((out / "ct_summary.json").read_text())
            lesion = summary["info"]["box_lesions"][0]
            prediction = load_volume(out / "ct_tumor.nii.gz").array > 0
            dice, volume_error = score(prediction, reference, ignore)
            row = {
                "case": name,
                "lesion": number,
                "reference_ml": round(float(np.count_nonzero(reference) * tumor.voxel_volume_ml), 2),
                "dice": round(float(dice), 3),
                "volume_error": round(float(volume_error), 3),
                "box_slices": lesion["box_slices"][1] - lesion["box_slices"][0] + 1,
                "slices": int(np.ptp(lesion["slices_segmented"])) + 1 if lesion["slices_segmented"] else 0,
                "hu_gate": lesion["hu_gate"],
                "zoomed": lesion["zoomed"],
                "grew_past_box": lesion["grew_past_box"],
                "voxels_past_box": lesion["voxels_outside_box"],
                "engine_s": summary["info"]["timings"]["total_s"],
                "encode_s": summary["info"]["timings"]["encode_s"],
                **measured,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.pictures:
                ct = ct if ct is not None else load_volume(case / "ct.nii.gz")
                title = f"{name} lesion {number}: Dice {dice:.2f}, volume {volume_error:+.0%}"
                draw(args.pictures / f"{name}_{number}.png", ct, reference, prediction, [first, last], title)
    dices = [row["dice"] for row in rows]
    past = sum(row["grew_past_box"] for row in rows)
    peak = max(row["peak_rss_mb"] for row in rows)
    print(f"mean Dice {np.mean(dices):.3f}, lowest {min(dices):.3f}; past the box: {past}/{len(rows)}; peak {peak} MB")
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        args.table.write_text(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """The per-lesion table and its means."""
    head = (
        "| case | lesion | reference ml | Dice | volume error | slices (box) | HU gate | zoom | past box | "
        "command s (CPU s) | engine s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['case']} | {r['lesion']} | {r['reference_ml']} | {r['dice']:.2f} | {r['volume_error']:+.0%} | "
        f"{r['slices']} ({r['box_slices']}) | {'on' if r['hu_gate'] else 'off'} | {'yes' if r['zoomed'] else 'no'} | "
        f"{r['voxels_past_box'] or 'no'} | {r['wall_s']} ({r['cpu_s']}) | {r['engine_s']} | {r['peak_rss_mb']} |"
        for r in rows
    ]
    dices = [r["dice"] for r in rows]
    mean = f"Mean Dice {np.mean(dices):.3f} over {len(rows)} lesions, lowest {min(dices):.3f}."
    return head + "\n".join(lines) + f"\n\n{mean}\n"


if __name__ == "__main__":
    main()
