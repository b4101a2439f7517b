"""Tests of the LungTumorSegTraining Slicer module without Slicer: gui_helpers, the .ui file, the API check."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from LungTumorSegTrainingLib.slicer_glue import dataset_check as datasets
from LungTumorSegTrainingLib.slicer_glue import run_monitor as monitor
from LungTumorSegTrainingLib.slicer_glue import train_commands as commands

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIDC = SHARED_DATA / "lidc-nodule-crops"
MODULE_PY = ROOT / "LungTumorSegTraining" / "LungTumorSegTraining.py"
UI_FILE = ROOT / "LungTumorSegTraining" / "Resources" / "UI" / "LungTumorSegTraining.ui"
API_CHECK = ROOT.parent / "shared" / "tools" / "slicer_api_check.py"


def lidc_pairs(count: int = 3) -> list[tuple[Path, Path]]:
    """``count`` LIDC crops of different patients (skips when the shared data is absent)."""
    if not (LIDC / "image").is_dir():
        pytest.skip("shared LIDC crops not available")
    pairs, patients = [], set()
    for image in sorted((LIDC / "image").glob("*.nii.gz")):
        patient = image.name.split("_")[0]
        if patient not in patients and (LIDC / "mask" / image.name).is_file():
            pairs.append((image, LIDC / "mask" / image.name))
            patients.add(patient)
        if len(pairs) == count:
            break
    return pairs


@pytest.fixture
def tiny_msd(tmp_path: Path) -> Path:
    return datasets.build_tiny_msd(tmp_path / "Task06_tiny", lidc_pairs())


# ------------------------------------------------------------------------------------------ command lines


def test_training_command_single_process():
    s = commands.TrainSettings(data=["/d/Task06_Lung"], output_dir="/runs", run_name="r1", epochs=7, lr=3e-4, fold=2)
    (args,) = commands.training_commands(s, python="/py")
    assert args[:4] == ["/py", "-m", "LungTumorSegTrainingLib", "train"]
    joined = " ".join(args)
    assert "--data /d/Task06_Lung --output /runs/r1 --arch UNet --patch-size 96 96 64" in joined
    assert "--epochs 7" in joined and "--lr 0.0003" in joined and "--fold 2" in joined and "--loss dicece" in joined
    assert args[-2:] == ["--progress", "json"]
    assert commands.stop_file_of(args) == commands.stop_file("/runs/r1") == Path("/runs/r1") / "stop-request"
    assert "--steps-per-epoch" not in args and "--max-cases" not in args


def test_training_command_torchrun_and_ensemble():
    s = commands.TrainSettings(
        data=["/img", "/lab"], output_dir="/runs", run_name="ens", archs=["UNet", "SwinUNETR"], gpus=4
    )
    command_lines = commands.training_commands(s, python="/py")
    assert len(command_lines) == 2
    for command, arch, folder in zip(command_lines, ["UNet", "SwinUNETR"], ["ens-unet", "ens-swinunetr"]):
        assert command[:6] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
        assert command[6:9] == ["-m", "LungTumorSegTrainingLib", "train"]
        assert command[command.index("--data") + 1 : command.index("--data") + 3] == ["/img", "/lab"]
        assert command[command.index("--arch") + 1] == arch
        assert command[command.index("--output") + 1] == str(Path("/runs") / folder)


def test_presets_and_problems():
    base = commands.TrainSettings(data=["/d"], output_dir="/o", run_name="quick")
    quick = commands.apply_preset(base, "Quick CPU check")
    assert quick.device == "cpu" and quick.gpus == 1 and quick.epochs <= 3 and quick.steps_per_epoch > 0
    assert quick.data == ["/d"] and quick.run_name == "quick"
    args = commands.train_command(quick, "UNet", "/o/quick", python="/py")
    assert "--steps-per-epoch" in args and "--max-cases" in args and args[args.index("--device") + 1] == "cpu"
    assert quick.problems() == []
    msd = commands.apply_preset(base, "MSD Task06 on one GPU")
    assert msd.archs == ["UNet", "SwinUNETR"] and msd.device == "cuda" and msd.patch_size == [96, 96, 64]
    assert msd.problems() == []
    bad = commands.TrainSettings(run_name="a b", patch_size=[96, 96, 40], archs=["SwinUNETR"], gpus=2, device="cpu")
    text = " ".join(bad.problems())
    for expected in ("dataset", "output folder", "Run name", "multiple of 32", "GPU"):
        assert expected in text
    with pytest.raises(KeyError):
        commands.apply_preset(base, "nope")


def test_resume_export_ensemble_commands(tmp_path: Path):
    assert commands.resume_command("/runs/r1", python="/py") == [
        "/py", "-m", "LungTumorSegTrainingLib", "resume", "/runs/r1",
        "--stop-file", str(Path("/runs/r1/stop-request")), "--progress", "json",
    ]  # fmt: skip
    assert commands.stop_file_of(commands.resume_command("/runs/r1", python="/py")) == Path("/runs/r1/stop-request")
    assert commands.resume_command("/runs/r1", python="/py", gpus=2)[2] == "torch.distributed.run"
    (export,) = commands.install_commands(["/runs/a"], tmp_path, "my-model", python="/py")
    assert export == ["/py", "-m", "LungTumorSegTrainingLib", "export", "/runs/a", "--name", "my-model", "--out",
                      str(tmp_path / "my-model")]  # fmt: skip
    search, export = commands.install_commands(["/runs/a", "/runs/b"], tmp_path, "ens", python="/py", overwrite=True)
    assert search[3:6] == ["ensemble", "/runs/a", "/runs/b"] and search[-2:] == ["--progress", "json"]
    result = search[search.index("--output") + 1]
    assert result == str(Path("/runs/ens-ensemble.json"))
    assert export[3:6] == ["export", "--ensemble", result] and export[-1] == "--overwrite"
    assert export[export.index("--out") + 1] == str(tmp_path / "ens")
    assert commands.stop_file_of(search) is None and commands.stop_file_of(export) is None  # Stop kills these
    with pytest.raises(ValueError):
        commands.install_commands([], tmp_path, "x")
    with pytest.raises(ValueError):
        commands.install_commands(["/runs/a"], tmp_path, "bad name/..")


def test_commands_parse_with_the_engine_cli():
    """Every command line the GUI builds is accepted by the engine's argparse parser (when it is there)."""
    cli = pytest.importorskip("LungTumorSegTrainingLib.cli.main")
    parser = cli.build_parser()
    s = commands.apply_preset(commands.TrainSettings(data=["/d"], output_dir="/o", run_name="r"), "Quick CPU check")
    s.archs = ["UNet", "SwinUNETR"]
    s.patch_size = [64, 64, 32]
    command_lines = commands.training_commands(s, python="/py") + [commands.resume_command("/o/r", python="/py")]
    command_lines += commands.install_commands(["/o/a", "/o/b"], "/m", "ens", python="/py", overwrite=True)
    command_lines += commands.install_commands(["/o/a"], "/m", "one", python="/py")
    for command in command_lines:
        args = parser.parse_args(command[3:])
        assert args.command == command[3]
    train = parser.parse_args(command_lines[0][3:])
    assert (train.arch, train.patch_size, train.epochs, train.steps_per_epoch) == ("UNet", [64, 64, 32], 2, 2)
    assert train.data == ["/d"] and train.progress == "json" and train.device == "cpu" and train.max_cases == 3
    assert train.stop_file == str(Path("/o/r-unet/stop-request"))
    assert parser.parse_args(command_lines[2][3:]).stop_file == str(Path("/o/r/stop-request"))


# ------------------------------------------------------------------------------------------ events


def test_parse_line_json_and_garbage():
    assert monitor.parse_line("") is None and monitor.parse_line("   \n") is None
    event = monitor.parse_line('{"event": "metrics", "epoch": 3, "train_loss": 0.5, "val_dice": null}\n')
    assert event == {"event": "metrics", "epoch": 3, "train_loss": 0.5, "val_dice": None}
    assert monitor.parse_line(b'[rank0]: {"event": "progress", "fraction": 0.5}')["fraction"] == 0.5
    for garbage in (
        "Traceback (most recent call last):",
        '{"event": broken',
        "{not json}",
        '{"no_event": 1}',
        "[1, 2]",
    ):
        assert monitor.parse_line(garbage) == {"event": "text", "message": garbage}


def test_line_buffer_splits_chunks():
    buffer = monitor.LineBuffer()
    assert buffer.feed(b'{"event": "log", "mes') == []
    assert buffer.feed('sage": "hi"}\r\nsecond\npart') == ['{"event": "log", "message": "hi"}', "second"]
    assert buffer.flush() == ["part"] and buffer.flush() == []


def test_metrics_history_merges_events_and_csv(tmp_path: Path):
    history = monitor.MetricsHistory()
    assert history.add({"event": "metrics", "epoch": 1, "train_loss": 0.9, "val_dice": None})
    assert not history.add({"event": "metrics", "epoch": 1, "train_loss": 0.9})
    assert not history.add({"event": "progress", "fraction": 0.1})
    history.add({"event": "metrics", "epoch": 2, "train_loss": 0.7, "val_dice": 0.31, "best_dice": 0.31})
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,global_step,train_loss,val_dice,lr,epoch_time_s,best_dice\n"
        "1,2,0.9,,0.001,1.5,\n2,4,0.7,0.31,0.001,1.4,0.31\n3,6,0.6,0.42,0.001,1.4,0.42\n"
    )
    assert history.load_csv(csv_path)
    assert history.epochs() == [1, 2, 3]
    table = history.table()
    assert table["train_loss"] == [0.9, 0.7, 0.6]
    assert np.isnan(table["val_dice"][0]) and table["val_dice"][1:] == [0.31, 0.42]
    assert history.best_dice() == pytest.approx(0.42)
    assert not monitor.MetricsHistory().load_csv(tmp_path / "missing.csv")


def test_progress_fraction_and_eta():
    assert monitor.progress_fraction({"fraction": 0.25}) == 0.25
    assert monitor.progress_fraction({"fraction": 7}) == 1.0
    assert monitor.progress_fraction({"epoch": 3, "epochs": 10, "step": 5, "steps": 10}) == pytest.approx(0.25)
    assert monitor.progress_fraction({"epoch": 2}, epochs_total=4) == pytest.approx(0.25)
    assert monitor.progress_fraction({"message": "x"}) is None
    assert monitor.eta_seconds(60.0, 0.25) == pytest.approx(180.0)
    assert monitor.eta_seconds(60.0, 0.0) is None and monitor.eta_seconds(10.0, 1.0) == 0.0
    assert monitor.format_duration(None) == "?" and monitor.format_duration(42) == "42s"
    assert monitor.format_duration(185) == "3m 05s" and monitor.format_duration(3720) == "1h 02m"


# ------------------------------------------------------------------------------------------ runs


def write_run(folder: Path, state: str | None, pid: int | None, epochs_done: int, best: bool = True) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"arch": "UNet", "epochs": 10}))
    if state is not None:
        status = {"state": state, "pid": pid, "epoch": epochs_done, "best_dice": 0.5, "updated": "2025-01-01T00:00:00Z"}
        (folder / "status.json").write_text(json.dumps(status))
    rows = "".join(
        f"{e},{2 * e},{1.0 / e:.3f},{0.1 * e:.2f},0.001,1.0,{0.1 * e:.2f}\n" for e in range(1, epochs_done + 1)
    )
    (folder / "metrics.csv").write_text("epoch,global_step,train_loss,val_dice,lr,epoch_time_s,best_dice\n" + rows)
    (folder / "checkpoints" / "last.pt").write_bytes(b"x")
    if best:
        (folder / "checkpoints" / "best.pt").write_bytes(b"x")
    (folder / "train.log").write_text("epoch 1/10: loss 1.0\n")
    return folder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_discover_runs_and_states(tmp_path: Path):
    write_run(tmp_path / "alive", "running", os.getpid(), 3)
    write_run(tmp_path / "dead", "running", dead_pid(), 4)
    write_run(tmp_path / "done", "finished", 1, 10)
    write_run(tmp_path / "stopped", "stopped", 1, 2, best=False)
    write_run(tmp_path / "nostatus", None, None, 1)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "somefile.txt").write_text("x")
    runs = {r.name: r for r in monitor.discover_runs(tmp_path)}
    assert set(runs) == {"alive", "dead", "done", "stopped", "nostatus"}
    assert runs["alive"].state == "running"
    assert runs["dead"].state == "crashed" and runs["dead"].resumable
    assert runs["done"].state == "finished" and not runs["done"].resumable and runs["done"].installable
    assert runs["stopped"].resumable and runs["stopped"].has_last and not runs["stopped"].has_best
    assert runs["nostatus"].state == "stopped"
    done = runs["done"]
    assert (done.epoch, done.epochs, done.arch) == (10, 10, "UNet")
    assert done.best_dice == pytest.approx(1.0) and done.last_val_dice == pytest.approx(1.0)
    assert done.log == tmp_path / "done" / "train.log"
    assert "finished" in done.summary() and "epoch 10/10" in done.summary() and "best Dice 1.000" in done.summary()
    assert monitor.discover_runs(tmp_path / "missing") == []
    assert [r.name for r in monitor.discover_runs(tmp_path / "done")] == ["done"]  # a run folder itself


def test_effective_state_other_host_and_bad_status(tmp_path: Path):
    status = {"state": "running", "pid": dead_pid(), "host": "cluster-node-7"}
    assert monitor.effective_state(status, hostname="my-laptop") == "running"
    assert monitor.effective_state({**status, "host": "my-laptop"}, hostname="my-laptop") == "crashed"
    assert monitor.effective_state({"state": "exploded"}) == "unknown"
    assert (
        not monitor.pid_alive(None)
        and not monitor.pid_alive("x")
        and not monitor.pid_alive(-3)
        and monitor.pid_alive(os.getpid())
    )
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "status.json").write_text('{"state": "runn')  # being rewritten
    (folder / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n2,")
    info = monitor.read_run(folder)
    assert info.state == "stopped" and info.epoch == 2 and info.last_loss == 0.5


# ------------------------------------------------------------------------------------------ dataset


def test_validate_msd_dataset_on_real_crops(tiny_msd: Path):
    summary = datasets.validate_dataset([tiny_msd])
    assert summary.ok, summary.text()
    assert summary.kind == "msd" and len(summary.cases) == 3 and summary.name == "Task06_tiny"
    assert summary.labels_checked == 3 and summary.label_values == [0, 1]
    assert len(summary.spacing_min) == 3 and all(0 < a <= b for a, b in zip(summary.spacing_min, summary.spacing_max))
    assert summary.split["train"] + summary.split["val"] == 3 and summary.split["val"] >= 1
    text = summary.text()
    assert "MSD dataset 'Task06_tiny': 3 cases" in text and "Label values" in text and "Split" in text
    assert datasets.validate_dataset([tiny_msd / "dataset.json"]).ok


def test_validate_image_label_folders(tmp_path: Path):
    pairs = lidc_pairs(3)
    images, labels = tmp_path / "image", tmp_path / "mask"
    images.mkdir()
    labels.mkdir()
    for image, label in pairs:
        (images / image.name).symlink_to(image)
        (labels / image.name.replace(".nii.gz", "_seg.nii.gz")).symlink_to(label)
    both = datasets.validate_dataset([tmp_path])
    assert both.ok and both.kind == "folders" and len(both.cases) == 3, both.text()
    assert datasets.validate_dataset([images, labels]).ok
    (images / "LIDC-IDRI-9999_R_1.nii.gz").symlink_to(pairs[0][0])
    unlabelled = datasets.validate_dataset([tmp_path])
    assert not unlabelled.ok and "1 image(s) have no label in mask/: LIDC-IDRI-9999_R_1.nii.gz" in unlabelled.errors[0]


def test_validate_broken_variants(tmp_path: Path, tiny_msd: Path):
    assert "no dataset folder chosen" in datasets.validate_dataset([]).errors[0]
    assert "no such folder" in datasets.validate_dataset([tmp_path / "nowhere"]).errors[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a dataset" in datasets.validate_dataset([empty]).errors[0]

    no_json = tmp_path / "no_json"
    shutil.copytree(tiny_msd, no_json, symlinks=True)
    (no_json / "dataset.json").unlink()
    shutil.rmtree(no_json / "labelsTr")
    assert "dataset.json is missing" in datasets.validate_dataset([no_json]).errors[0]

    missing = tmp_path / "missing_file"
    shutil.copytree(tiny_msd, missing, symlinks=True)
    first = sorted((missing / "labelsTr").iterdir())[0]
    first.unlink()
    summary = datasets.validate_dataset([missing])
    assert not summary.ok and "1 file(s) listed in dataset.json are missing" in summary.errors[0]
    assert first.name in summary.errors[0]

    bad_json = tmp_path / "bad_json"
    shutil.copytree(tiny_msd, bad_json, symlinks=True)
    (bad_json / "dataset.json").write_text('{"training": [')
    assert "cannot be read as JSON" in datasets.validate_dataset([bad_json]).errors[0]
    (bad_json / "dataset.json").write_text('{"training": []}')
    assert "no 'training' list" in datasets.validate_dataset([bad_json]).errors[0]

    multi = tmp_path / "multilabel"
    shutil.copytree(tiny_msd, multi, symlinks=True)
    label_path = sorted((multi / "labelsTr").iterdir())[0]
    label = nib.load(str(label_path))
    data = np.asarray(label.dataobj).astype(np.uint8)
    data[0, 0, 0] = 2
    label_path.unlink()
    nib.save(nib.Nifti1Image(data, label.affine, label.header), str(label_path))
    summary = datasets.validate_dataset([multi])
    assert not summary.ok and "label values {0, 1, 2} found" in summary.errors[0]

    shape = tmp_path / "shape"
    shutil.copytree(tiny_msd, shape, symlinks=True)
    label_path = sorted((shape / "labelsTr").iterdir())[0]
    label = nib.load(str(label_path))
    label_path.unlink()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), label.affine), str(label_path))
    assert "differs from label shape" in datasets.validate_dataset([shape]).errors[0]

    single = datasets.build_tiny_msd(tmp_path / "single", lidc_pairs(1))
    assert "at least 2 cases" in datasets.validate_dataset([single]).errors[0]


# ------------------------------------------------------------------------------------------ GUI files


def ui_names_used() -> set[str]:
    return set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))


def test_ui_loads_and_has_every_widget_the_module_uses():
    pytest.importorskip("PySide6.QtUiTools")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QWidget

    app = QApplication.instance() or QApplication([])
    handle = QFile(str(UI_FILE))
    assert handle.open(QFile.ReadOnly)
    widget = QUiLoader().load(handle)
    handle.close()
    assert widget is not None and widget.objectName() == "LungTumorSegTraining"
    names = {child.objectName() for child in widget.findChildren(QWidget)}
    used = ui_names_used()
    assert len(used) > 20
    assert used <= names, f"missing in the .ui: {sorted(used - names)}"
    ui_text = UI_FILE.read_text(encoding="utf-8")
    for custom in set(re.findall(r'<widget class="((?:ctk|qMRML|qSlicer)\w+)"', ui_text)):
        assert f"<class>{custom}</class>" in ui_text, f"{custom} not declared in <customwidgets>"
    widget.deleteLater()
    del app


def test_cmake_lists_the_resources():
    cmake = (ROOT / "LungTumorSegTraining" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "Resources/Icons/${MODULE_NAME}.png" in cmake and "Resources/UI/${MODULE_NAME}.ui" in cmake
    assert (ROOT / "LungTumorSegTraining" / "Resources" / "Icons" / "LungTumorSegTraining.png").read_bytes()[:4] == (
        b"\x89PNG"
    )


def test_slicer_api_check_passes():
    if not API_CHECK.is_file():
        pytest.skip("slicer_api_check.py not available")
    result = subprocess.run(
        ["python3", str(API_CHECK), "LungTumorSegTraining"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 unknown" in result.stdout


# ------------------------------------------------------------------------------------------ end to end (slow)


def follow(command: list[str], stop_after_metrics: int = 0) -> tuple[int, monitor.MetricsHistory, dict[str, int]]:
    """Run an engine command as the module's Logic does: parse its stdout lines; SIGTERM after N metrics events."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    history, kinds, buffer, sent = monitor.MetricsHistory(), {}, monitor.LineBuffer(), False
    assert process.stdout is not None
    for chunk in iter(lambda: process.stdout.read1(4096), b""):
        for line in buffer.feed(chunk):
            event = monitor.parse_line(line)
            if event is None:
                continue
            kinds[event["event"]] = kinds.get(event["event"], 0) + 1
            if event["event"] == "metrics":
                history.add(event)
                if stop_after_metrics and len(history.rows) >= stop_after_metrics and not sent:
                    process.terminate()  # what the Stop button does (QProcess.terminate = SIGTERM)
                    sent = True
    return process.wait(timeout=300), history, kinds


@pytest.mark.slow
def test_quick_cpu_run_stop_resume_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The Slicer self-test's scenario with the real engine: quick CPU run, Stop, Resume, Install model."""
    pytest.importorskip("LungTumorSegTrainingLib.cli.main")
    from LungTumorSegLib.model.bundle import list_bundles

    dataset = datasets.build_tiny_msd(tmp_path / "tiny", lidc_pairs())
    settings = commands.apply_preset(
        commands.TrainSettings(data=[str(dataset)], output_dir=str(tmp_path / "runs")), "Quick CPU check"
    )
    settings.run_name, settings.epochs = "quick", 3
    (command,) = commands.training_commands(settings, sys.executable)
    code, history, kinds = follow(command, stop_after_metrics=1)
    run_dir = settings.run_dirs()[0]
    run = monitor.read_run(run_dir)
    assert kinds.get("metrics", 0) >= 1 and kinds.get("progress", 0) >= 1
    print(f"after Stop: exit code {code}, {run.summary()}")
    if run.state != "finished":  # the stop may arrive after the last epoch on a fast machine
        assert run.state == "stopped" and run.resumable, (code, run)
        code, _, _ = follow(commands.resume_command(run_dir, sys.executable))
        assert code == 0
    run = monitor.read_run(run_dir)
    assert run.state == "finished" and run.epoch == 3 and run.installable and run.best_dice is not None
    full = monitor.MetricsHistory()
    assert full.load_csv(run_dir / "metrics.csv") and full.epochs() == [1, 2, 3]

    monkeypatch.setenv("LUNGTUMORSEG_MODELS", str(tmp_path / "models"))
    for command in commands.install_commands([run_dir], tmp_path / "models", "quick-model", sys.executable):
        assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    assert "quick-model" in list_bundles()


# ------------------------------------------------------------------------------------------ the Logic on real MRML


@pytest.fixture
def training_logic(mrml):
    """The module's TrainingLogic (LungTumorSegTrainingLogic is a thin subclass) on a real scene (slicer-core)."""
    from LungTumorSegTrainingLib.slicer_glue.training_logic import TrainingLogic

    logic = TrainingLogic()
    assert logic.pollTimer is None and logic.outputTimer is None, "no Qt here: the test drives the polling"
    return logic


def test_logic_parses_engine_lines_and_plots_into_real_table_and_chart_nodes(training_logic, tmp_path: Path):
    import slicer

    logic = training_logic
    logs, progress, metrics = [], [], []
    logic.onLog, logic.onProgress, logic.onMetrics = logs.append, lambda f, m: progress.append((f, m)), metrics.append
    logic.startTime = 1.0
    logic.stepsTotal, logic.stepsDone = 2, 1  # second command of an ensemble queue
    for line in (
        '{"event": "progress", "step": "train", "fraction": 0.5, "message": "epoch 1/2"}',
        '{"event": "metrics", "epoch": 1, "train_loss": 0.8, "val_dice": 0.2, "best_dice": 0.2}',
        '{"event": "metrics", "epoch": 2, "train_loss": 0.6, "val_dice": 0.4, "best_dice": 0.4}',
        '{"event": "log", "level": "warning", "message": "CUDA out of memory"}',
        '{"event": "error", "message": "boom"}',
        "Traceback (most recent call last):",
        "",
    ):
        logic.handleLine(line)
    assert progress[0][0] == pytest.approx(0.75) and "ETA" in progress[0][1]
    assert logic.history.epochs() == [1, 2] and metrics[-1] is logic.history
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(logic.tableNode, "train_loss"), [0.8, 0.6])
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(logic.tableNode, "val_dice"), [0.2, 0.4])
    chart = logic.chartNode
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(n) for n in range(2)]
    assert [s.GetYColumnName() for s in series] == ["train_loss", "val_dice"]
    assert all(s.GetTableNodeID() == logic.tableNode.GetID() for s in series)
    assert any("warning: CUDA out of memory" in m for m in logs) and any("ERROR: boom" in m for m in logs)
    assert any("Traceback" in m for m in logs)

    run = tmp_path / "run"
    write_run(run, "finished", 1, 3)
    (run / "val_overlay.png").write_bytes(b"png")
    overlays, states = [], []
    logic.onOverlay, logic.onRunState = overlays.append, states.append
    logic.follow(run)
    assert logic.history.epochs() == [1, 2, 3] and overlays == [str(run / "val_overlay.png")]
    assert logic.poll().state == "finished" and states[-1].state == "finished"
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1, "the plot's table is reused"
    env = logic.engineEnvironment()
    assert env["PYTHONUNBUFFERED"] == "1" and str(MODULE_PY.parent) in env["PYTHONPATH"].split(os.pathsep)


def test_gui_defaults_equal_the_engine_defaults():
    """The GUI keeps its own copy of the defaults (it imports without torch); they must not drift."""
    from LungTumorSegTrainingLib.config import TrainConfig

    engine, gui = TrainConfig(), commands.TrainSettings()
    shared_fields = [f.name for f in dataclasses.fields(gui) if hasattr(engine, f.name)]
    assert len(shared_fields) >= 10
    for name in shared_fields:
        assert getattr(gui, name) == getattr(engine, name), name


def quick_settings(tmp_path: Path, name: str) -> commands.TrainSettings:
    settings = commands.apply_preset(
        commands.TrainSettings(
            data=[str(datasets.build_tiny_msd(tmp_path / f"tiny-{name}", lidc_pairs()))], output_dir=str(tmp_path)
        ),
        "Quick CPU check",
    )
    settings.run_name, settings.epochs, settings.steps_per_epoch, settings.patch_size = name, 3, 3, [32, 32, 16]
    return settings


def wait_for(condition, timeout_s: float, step=None) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if step is not None:
            step()
        time.sleep(0.05)


def test_the_logic_stops_a_real_run_through_the_stop_file(training_logic, tmp_path: Path):
    """The module's own Logic (its output timer driven here): Stop ends a real run cleanly."""
    logic = training_logic
    settings = quick_settings(tmp_path, "q")
    finished, progress = [], []
    logic.onFinished = lambda code, ok: finished.append((code, ok))
    logic.onProgress = lambda fraction, message: progress.append(message)
    logic.start(commands.training_commands(settings, sys.executable), settings.run_dirs())
    assert logic.canStop()

    def read_and_stop():
        logic._readOutput()  # what the module's 100 ms timer calls
        if progress and not logic.stopRequested:
            logic.stop()

    wait_for(lambda: logic.process is None, 240, read_and_stop)
    assert finished == [(0, False)], "exit code 0, not 'ok' because a stop was requested"
    run = monitor.read_run(settings.run_dirs()[0])
    assert run.state == "stopped" and run.resumable
    assert not commands.stop_file(settings.run_dirs()[0]).exists()


def test_a_reconnected_run_can_be_stopped_from_the_panel(training_logic, tmp_path: Path):
    """A run started elsewhere (a shell, an earlier Slicer session) and followed through its folder: Stop works."""
    logic = training_logic
    settings = quick_settings(tmp_path, "elsewhere")
    settings.epochs = 50
    (command,) = commands.training_commands(settings, sys.executable)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = settings.run_dirs()[0]
    try:
        wait_for(lambda: monitor.read_run(run_dir).state == "running", 120)
        assert not logic.canStop() and not logic.stop(), "nothing followed yet"
        logic.follow(run_dir)
        assert logic.canStop() and logic.followedRun().pid == process.pid
        assert logic.stop()
        assert process.wait(timeout=240) == 0
    finally:
        if process.poll() is None:
            process.kill()
    run = monitor.read_run(run_dir)
    assert run.state == "stopped" and run.resumable and run.epoch < 50
    assert logic.poll().state == "stopped" and not logic.canStop()


def test_closing_slicer_stops_the_run_with_a_checkpoint_without_waiting(training_logic, tmp_path: Path):
    """Slicer quits (the widget's cleanup): no dialog, no wait; the run stops cleanly even with its reader gone."""
    import time

    logic = training_logic
    settings = quick_settings(tmp_path, "quit")
    settings.epochs = 50
    logic.start(commands.training_commands(settings, sys.executable), settings.run_dirs())
    wait_for(lambda: monitor.read_run(settings.run_dirs()[0]).state == "running", 120, logic._readOutput)
    engine = logic.process
    started = time.monotonic()
    logic.shutdown()
    assert time.monotonic() - started < 2.0 and logic.process is None
    engine.popen.stdout.close()  # Slicer's end closes the pipe: later progress lines have no reader
    assert engine.popen.wait(timeout=240) == 0
    run = monitor.read_run(settings.run_dirs()[0])
    assert run.state == "stopped" and run.resumable and run.epoch < 50


def test_progress_lines_without_a_reader_stop_quietly():
    """What keeps a training alive after Slicer closed: a broken pipe ends the progress lines, not the run."""
    import io

    from LungTumorSegLib.core.progress import ProgressReporter

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    reporter = ProgressReporter("json", stream=Gone())
    reporter.update("train", 0.5, "epoch 1")
    reporter.log("info", "still training")
    assert reporter.mode == "none"
