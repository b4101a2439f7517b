"""``lungtumorseg devices``: the compute devices torch sees (the Slicer panel asks this in a separate process)."""

from __future__ import annotations

import argparse
import json
from typing import TextIO


def add_devices_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``devices [--json]``."""
    parser = commands.add_parser(
        "devices", help="list the GPUs torch can use", description="List the compute devices torch sees."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_devices)


def device_report() -> dict:
    """``{"torch": version, "cuda": [{"index", "name", "memory_gb"}], "mps": bool}``."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            gpus.append(
                {"index": index, "name": properties.name, "memory_gb": round(properties.total_memory / 2**30, 1)}
            )
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {"torch": torch.__version__, "cuda": gpus, "mps": mps}


def run_devices(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Print the device report (JSON with ``--json``)."""
    report = device_report()
    if args.json:
        print(json.dumps(report), file=stdout)
        return 0
    print(f"torch {report['torch']}", file=stdout)
    for gpu in report["cuda"]:
        print(f"cuda:{gpu['index']}  {gpu['name']}  {gpu['memory_gb']} GB", file=stdout)
    if not report["cuda"]:
        print("no CUDA GPU: the engine runs on the CPU", file=stdout)
    return 0
