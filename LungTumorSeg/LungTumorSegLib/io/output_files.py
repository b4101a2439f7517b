"""Writing a set of output files all-or-nothing, never replacing files unless asked."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import OutputError
from ..core.signals import signals_deferred


def default_file_mode() -> int:
    """Permissions a normally created file gets (0o666 less the umask); mkstemp uses 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file beside ``path``; when the block succeeds, rename it onto ``path``.

    The file appears complete or not at all; the temporary file is removed on failure.

    Raises:
        OutputError: the folder or the file cannot be written.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot write here ({exc.strerror or exc})") from exc
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_writable(out_dir: Path, names: list[str], overwrite: bool) -> None:
    """Fail early when ``out_dir`` cannot be written or an output exists and overwrite is false."""
    check_folder_path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from exc
    if not overwrite:
        existing = [name for name in names if (out_dir / name).exists()]
        if existing:
            raise OutputError(f"{out_dir}: {', '.join(existing)} already exist (use --overwrite to replace)")


def check_folder_path(out_dir: Path) -> None:
    """Raise OutputError when ``out_dir`` or one of its parents is an existing file, not a folder."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "the output folder" if folder == out_dir else f"a parent of the output folder {out_dir}"
                raise OutputError(f"{folder}: {what} is a file, not a folder")
            return


@contextmanager
def removing_new_empty_folders(out_dir: Path) -> Iterator[Path]:
    """Yield ``out_dir``; afterwards remove the folders of its path that did not exist before and are empty.

    So a failed or cancelled run does not leave a new, empty output folder behind.
    """
    out_dir = Path(out_dir)
    new = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
    try:
        yield out_dir
    finally:
        for folder in new:  # deepest first
            try:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:
                break


class OutputSet:
    """Stage files in a hidden folder, then move them into place together on ``commit()``.

    Used as a context manager: if anything fails (or the run is interrupted) before ``commit()``,
    the staged files are removed and the output folder is left as it was.

    Args:
        out_dir: the output folder.
        overwrite: replace existing files.
        replaces: every name of the earlier output set this one replaces (e.g. all the files of a case
            stem); with ``overwrite``, those not written again are removed on commit, so no stale file of
            an earlier run stays beside the new ones. Without ``overwrite`` any of them existing is an error.
    """

    def __init__(self, out_dir: Path, overwrite: bool = False, replaces: list[str] | tuple[str, ...] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self.replaces = list(replaces)
        self.staging: Path | None = None
        self.names: list[str] = []

    def __enter__(self) -> OutputSet:
        check_folder_path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=".lungtumorseg-", dir=self.out_dir))
        return self

    def path(self, name: str) -> Path:
        """Where to write output ``name`` now (inside the staging folder)."""
        assert self.staging is not None, "use OutputSet as a context manager"
        self.names.append(name)
        return self.staging / name

    def adopt(self, name: str) -> None:
        """Register a file a helper already wrote into the staging folder."""
        assert self.staging is not None and (self.staging / name).exists(), name
        self.names.append(name)

    def write(self, name: str, writer: Callable[[Path], Any]) -> None:
        """Call ``writer(path)`` to create output ``name``."""
        writer(self.path(name))

    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented JSON."""
        self.path(name).write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")

    def commit(self) -> dict[str, Path]:
        """Move every staged file into the output folder and remove stale ones; returns final paths by name.

        Runs with SIGINT/SIGTERM held, so an interrupt never leaves half a set.
        """
        assert self.staging is not None
        stale = [name for name in self.replaces if name not in self.names]
        check_writable(self.out_dir, self.names + stale, self.overwrite)
        final = {}
        with signals_deferred():
            try:
                for name in self.names:
                    os.replace(self.staging / name, self.out_dir / name)
                    final[name] = self.out_dir / name
                for name in stale:
                    (self.out_dir / name).unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"{self.out_dir}: cannot move the outputs into place ({exc.strerror or exc})"
                ) from exc
        return final

    def __exit__(self, *exc_info: object) -> None:
        with signals_deferred():
            if self.staging is not None and self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
