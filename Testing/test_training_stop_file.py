"""The training module's Stop on every OS: a stop file the trainer polls after each step (``--stop-file``)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from LungTumorSegLib.slicer_glue.process import EngineProcess
from LungTumorSegTrainingLib.slicer_glue import dataset_check as datasets
from LungTumorSegTrainingLib.slicer_glue import run_monitor as monitor
from LungTumorSegTrainingLib.slicer_glue import train_commands as commands
from LungTumorSegTrainingLib.training.checkpoints import load_checkpoint
from LungTumorSegTrainingLib.training.stopping import EXIT_STOPPED, STOP_FILE_REASON, StopRequest

LIDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc-nodule-crops"
LAUNCHER = "import subprocess, sys\nsys.exit(subprocess.Popen([sys.executable, *sys.argv[1:]]).wait())\n"


def test_the_stop_file_requests_a_stop_and_is_removed_at_the_end(tmp_path: Path):
    stop_file = tmp_path / "run" / "stop-request"
    with StopRequest(stop_file) as stop:
        assert not stop.requested
        stop_file.parent.mkdir()
        stop_file.write_text("stop\n")
        assert stop.requested and stop.signal_name == STOP_FILE_REASON and stop.exit_code == EXIT_STOPPED
    assert not stop_file.exists(), "a later resume must not stop at once"
    assert not StopRequest().requested and not StopRequest(tmp_path / "never").requested


def tiny_dataset(tmp_path: Path) -> Path:
    if not (LIDC / "image").is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC}")
    pairs, patients = [], set()
    for image in sorted((LIDC / "image").glob("*.nii.gz")):
        patient = image.name.split("_")[0]
        if patient not in patients and (LIDC / "mask" / image.name).is_file():
            pairs.append((image, LIDC / "mask" / image.name))
            patients.add(patient)
        if len(pairs) == 3:
            break
    return datasets.build_tiny_msd(tmp_path / "tiny", pairs)


def follow(engine: EngineProcess, stop_on: str | None = None, timeout: float = 240.0) -> list[dict]:
    """Parse the engine's JSON lines as the module does; write the stop file at the first ``stop_on`` message."""
    events, deadline = [], time.monotonic() + timeout
    while engine.running and time.monotonic() < deadline:
        for line in engine.read_lines():
            event = monitor.parse_line(line)
            if event is None:
                continue
            events.append(event)
            if stop_on and event.get("event") == "progress" and stop_on in str(event.get("message", "")):
                assert engine.request_stop()
                stop_on = None
        time.sleep(0.05)
    assert engine.wait(30) is not None, "the engine did not end"
    return events + [e for e in map(monitor.parse_line, engine.read_lines()) if e]


def test_a_real_training_run_stops_cleanly_with_a_checkpoint_when_the_stop_file_appears(tmp_path: Path):
    """The Slicer module's path: the GUI's command under a launcher-like parent, Stop = the stop file."""
    settings = commands.apply_preset(
        commands.TrainSettings(data=[str(tiny_dataset(tmp_path))], output_dir=str(tmp_path / "runs"), run_name="quick"),
        "Quick CPU check",
    )
    settings.epochs, settings.steps_per_epoch, settings.patch_size = 3, 3, [32, 32, 16]
    (command,) = commands.training_commands(settings, sys.executable)
    run_dir = settings.run_dirs()[0]
    launcher = tmp_path / "launcher.py"
    launcher.write_text(textwrap.dedent(LAUNCHER), encoding="utf-8")
    stop_file = commands.stop_file_of(command)
    assert stop_file == run_dir / "stop-request"

    engine = EngineProcess([sys.executable, str(launcher), *command[1:]], stop_file=stop_file)
    engine.start()
    events = follow(engine, stop_on="epoch 1/3 step 1/3")
    result = events[-1]
    assert engine.returncode == 0 and not engine.killed, events[-5:]
    assert result["event"] == "result" and result["state"] == "stopped", result
    assert STOP_FILE_REASON in result["message"] and 1 <= result["global_step"] < 3  # after the step in progress
    assert not stop_file.exists()
    run = monitor.read_run(run_dir)
    assert run.state == "stopped" and run.resumable
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["global_step"] == result["global_step"], "the checkpoint holds the last finished step"
    assert any(e["event"] == "checkpoint" for e in events)

    resumed = EngineProcess([sys.executable, str(launcher), *commands.resume_command(run_dir, sys.executable)[1:]])
    resumed.start()
    events = follow(resumed)
    assert resumed.returncode == 0, events[-5:]
    assert events[-1]["state"] == "finished" and events[-1]["global_step"] == 9
    assert monitor.read_run(run_dir).state == "finished"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["epoch"] == 3
