"""Reading and writing volumes as NIfTI (nibabel) or NRRD (pynrrd), geometry kept exact."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from .errors import InputError, OutputError
from .image_names import NIFTI_SUFFIXES, NRRD_SUFFIXES
from .outputs import atomic_path
from .volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NRRD_SPACES_LPS = {"left-posterior-superior", "LPS"}
_NRRD_SPACES_RAS = {"right-anterior-superior", "RAS"}


def image_format(path: str | os.PathLike) -> str:
    """Return ``"nifti"`` or ``"nrrd"`` from the file name, or raise InputError."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    raise InputError(f"{path}: unsupported file type (use .nii, .nii.gz, .nrrd or .nhdr)")


def load_volume(path: str | os.PathLike, dtype: type | None = np.float32) -> Volume:
    """Load a 3D NIfTI or NRRD file as a Volume in RAS geometry.

    Args:
        path: image file.
        dtype: cast the voxel array to this type (None keeps the stored type).

    Raises:
        InputError: missing, unreadable or corrupt files, or images that are not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = image_format(path)
    try:
        array, affine = _read_nifti(path) if kind == "nifti" else _read_nrrd(path)
    except InputError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(f"{path}: cannot read the file ({type(exc).__name__}: {exc})") from exc
    array = (
        np.squeeze(array, axis=tuple(range(3, array.ndim)))
        if array.ndim > 3 and all(s == 1 for s in array.shape[3:])
        else array
    )
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3D image, got {array.ndim}D with shape {tuple(array.shape)}")
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    return Volume(array, affine)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    if image.header.get("qform_code", 0) == 0 and image.header.get("sform_code", 0) == 0:
        # nibabel silently turns zero spacing into 1 mm; read the raw header to refuse it instead
        with nib.openers.ImageOpener(str(path)) as handle:
            raw = type(image.header).from_fileobj(handle, check=False)
        ndim = int(raw["dim"][0])
        if any(float(z) <= 0 for z in raw["pixdim"][1 : 1 + min(3, ndim)]):
            raise InputError(f"{path}: the file has no usable voxel spacing (pixdim {raw['pixdim'][1:4].tolist()})")
    return np.asanyarray(image.dataobj), image.affine


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    array, header = nrrd.read(str(path))
    directions = header.get("space directions")
    if directions is None:
        raise InputError(f"{path}: the NRRD header has no 'space directions' (voxel spacing)")
    directions = np.array([d for d in directions if d is not None and not np.any(np.isnan(np.asarray(d, float)))])
    if directions.shape != (3, 3):
        raise InputError(f"{path}: expected a 3D NRRD image, got space directions {directions.tolist()}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = directions.T
    affine[:3, 3] = origin
    space = header.get("space", "left-posterior-superior")
    if space in _NRRD_SPACES_LPS:
        affine = LPS_TO_RAS @ affine
    elif space not in _NRRD_SPACES_RAS:
        raise InputError(f"{path}: unsupported NRRD space '{space}'")
    return array, affine


def save_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a Volume as NIfTI or NRRD (chosen by suffix), atomically.

    The file appears complete or not at all. An existing file is kept unless
    ``overwrite`` is true.

    Raises:
        OutputError: the file exists (and overwrite is false) or cannot be written.
    """
    path = Path(path)
    kind = image_format(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: file exists (pass overwrite to replace it)")
    with atomic_path(path) as tmp:
        if kind == "nifti":
            _write_nifti(volume, str(tmp))
        else:
            _write_nrrd(volume, str(tmp))
    return path


def _write_nifti(volume: Volume, path: str) -> None:
    image = nib.Nifti1Image(volume.array, volume.affine)
    image.header.set_qform(volume.affine, code=1)
    image.header.set_sform(volume.affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _write_nrrd(volume: Volume, path: str) -> None:
    lps = LPS_TO_RAS @ volume.affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    nrrd.write(path, np.ascontiguousarray(volume.array), header, index_order="F")
