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

from .errors import OutputError


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


class OutputSet:
    """Stage files in a hidden folder, then move them into place together on ``commit()``.

    Used as a context manager: if anything fails before ``commit()``, the staged files are
    removed and the output folder is left as it was.
    """

    def __init__(self, out_dir: Path, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self.staging: Path | None = None
        self.names: list[str] = []

    def __enter__(self) -> OutputSet:
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
        """Move every staged file into the output folder; returns final paths by name."""
        assert self.staging is not None
        check_writable(self.out_dir, self.names, self.overwrite)
        final = {}
        for name in self.names:
            os.replace(self.staging / name, self.out_dir / name)
            final[name] = self.out_dir / name
        return final

    def __exit__(self, *exc_info: object) -> None:
        if self.staging is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
