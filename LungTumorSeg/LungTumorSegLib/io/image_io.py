"""Reading and writing volumes as NIfTI (nibabel) or NRRD (pynrrd), geometry kept exact.

Reading happens in two cheap-first steps so that checks can run before any large copy:
``read_header`` (the header only) and ``read_stored`` (the voxels in their stored type);
``load_volume`` then makes the float32 (or other) copy.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from ..core.errors import InputError, OutputError
from ..core.volume import Volume
from .image_names import NIFTI_SUFFIXES, NRRD_SUFFIXES
from .output_files import atomic_path

LOG = logging.getLogger("lungtumorseg")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NRRD_SPACES_LPS = {"left-posterior-superior", "LPS"}
_NRRD_SPACES_RAS = {"right-anterior-superior", "RAS"}
_READ_BLOCK = 16 << 20  # bytes decompressed per step when reading a gzipped NIfTI
_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file says about itself, read without its voxel data.

    Attributes:
        path: the file.
        shape: the stored array shape (may have more than 3 axes).
        dtype: the stored voxel type, before NIfTI scaling (None when the header does not say).
        affine: the voxel-to-RAS matrix ``load_volume`` uses (for NIfTI: nibabel's choice, the sform
            when its code is > 0, else the qform).
        sform, qform: NIfTI only: the header's two transforms where their codes are > 0.
        sform_code, qform_code: NIfTI only: the header's codes (0: not set).
        notes: what the reader had to assume (misnamed compression, no orientation in the header).
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype | None
    affine: np.ndarray
    sform: np.ndarray | None = None
    qform: np.ndarray | None = None
    sform_code: int = 0
    qform_code: int = 0
    notes: tuple[str, ...] = ()


@dataclass
class StoredImage:
    """Voxel values as the file stores them (NIfTI scaling not yet applied), with their geometry.

    Checks can run on the stored type (e.g. int16) before ``to_volume`` makes a float32 copy.
    """

    array: np.ndarray
    affine: np.ndarray
    slope: float = 1.0
    inter: float = 0.0
    notes: tuple[str, ...] = ()  # what the reader assumed or fixed (misnamed compression, nibabel header fixes)

    @property
    def scaled(self) -> bool:
        """True when the values are ``array * slope + inter`` rather than ``array`` itself."""
        return (self.slope, self.inter) != (1.0, 0.0)

    def to_volume(self, dtype: type | None = np.float32) -> Volume:
        """The values as a Volume of ``dtype`` (None: the stored type; float64 when scaled, as nibabel does)."""
        target = np.dtype(dtype) if dtype is not None else (np.dtype(np.float64) if self.scaled else None)
        array = self.array if target is None else np.asarray(self.array, dtype=target)
        if self.scaled:
            array = array * target.type(self.slope) if self.slope != 1.0 else array.copy()  # type: ignore[union-attr]
            array += target.type(self.inter)  # type: ignore[union-attr]
        return Volume(array, self.affine)


def image_format(path: str | os.PathLike) -> str:
    """Return ``"nifti"`` or ``"nrrd"`` from the file name, or raise InputError."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    raise InputError(f"{path}: unsupported file type (use .nii, .nii.gz, .nrrd or .nhdr)")


def read_header(path: str | os.PathLike) -> ImageHeader:
    """The header facts of a NIfTI or NRRD file, without reading its voxel data.

    Raises:
        InputError: missing, unsupported or unreadable files.
    """
    path = _existing(path)
    kind = image_format(path)
    try:
        if kind == "nrrd":
            header = nrrd.read_header(str(path))
            affine, notes = _nrrd_affine(header, path)
            return ImageHeader(path, tuple(int(n) for n in header["sizes"]), _nrrd_dtype(header), affine, notes=notes)
        with _nibabel_messages(), _opened_nifti(path) as (image, notes):
            sform, sform_code = image.header.get_sform(coded=True)
            qform, qform_code = image.header.get_qform(coded=True)
            return ImageHeader(
                path,
                tuple(int(n) for n in image.shape),
                np.dtype(image.get_data_dtype()),
                np.asarray(image.affine, dtype=np.float64),
                sform=sform if sform_code else None,
                qform=qform if qform_code else None,
                sform_code=int(sform_code),
                qform_code=int(qform_code),
                notes=notes,
            )
    except InputError:
        raise
    except (*_READ_ERRORS, KeyError, nrrd.NRRDError) as exc:
        raise InputError(f"{path}: cannot read the file header ({type(exc).__name__}: {first_line(exc)})") from exc


def read_stored(path: str | os.PathLike) -> StoredImage:
    """The voxel values in their stored type (3D, trailing singleton axes dropped) and the voxel-to-RAS geometry.

    Raises:
        InputError: missing, unreadable or corrupt files, images that are not 3D or not scalar, bad geometry.
    """
    path = _existing(path)
    kind = image_format(path)
    slope, inter = 1.0, 0.0
    try:
        if kind == "nifti":
            array, affine, slope, inter, notes = _read_nifti(path)
        else:
            array, affine, notes = _read_nrrd(path)
    except InputError:
        raise
    except (*_READ_ERRORS, nrrd.NRRDError) as exc:
        raise InputError(f"{path}: cannot read the file ({type(exc).__name__}: {first_line(exc)})") from exc
    array = (
        np.squeeze(array, axis=tuple(range(3, array.ndim)))
        if array.ndim > 3 and all(s == 1 for s in array.shape[3:])
        else array
    )
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3D image, got {array.ndim}D with shape {tuple(array.shape)}")
    if 0 in array.shape:
        raise InputError(f"{path}: the image has no voxels (shape {tuple(array.shape)})")
    if not is_scalar_type(array.dtype):
        raise InputError(f"{path}: voxel type {voxel_type_name(array.dtype)} is not a scalar image (colour or complex)")
    try:
        Volume(array[:1, :1, :1], affine)  # the geometry checks (spacing, finite, not degenerate), no copy
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return StoredImage(array, np.asarray(affine, dtype=np.float64), float(slope), float(inter), notes)


def load_volume(path: str | os.PathLike, dtype: type | None = np.float32) -> Volume:
    """Load a 3D NIfTI or NRRD file as a Volume in RAS geometry.

    Args:
        path: image file.
        dtype: cast the voxel array to this type (None keeps the stored type; float64 for scaled NIfTI).

    Raises:
        InputError: missing, unreadable or corrupt files, or images that are not 3D.
    """
    stored = read_stored(path)
    for note in stored.notes:
        LOG.warning("%s: %s", path, note)
    return stored.to_volume(dtype)


def is_scalar_type(dtype: np.dtype) -> bool:
    """True for plain boolean, integer and real voxel types (not RGB, complex or structured)."""
    return dtype.fields is None and dtype.kind in "biuf"


def voxel_type_name(dtype: np.dtype) -> str:
    """A short name of a voxel type for messages (``int16``, ``RGB24``, ``complex64``)."""
    if dtype.fields is not None:
        names = "".join(dtype.names or ())
        return f"{names}{dtype.itemsize * 8}" if names in ("RGB", "RGBA") else f"structured ({dtype})"
    return dtype.name


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library messages can run to many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path


@contextmanager
def _nibabel_messages() -> Iterator[list[str]]:
    """Collect nibabel's header messages (its logger would print each twice) to report them as notes."""
    logger = logging.getLogger("nibabel.global")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() not in seen:
                seen.append(record.getMessage())

    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [Collect()], False
    try:
        yield seen
    finally:
        logger.handlers, logger.propagate = handlers, propagate


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


@contextmanager
def _opened_nifti(path: Path) -> Iterator[tuple[nib.Nifti1Image, tuple[str, ...]]]:
    """nibabel's image of a NIfTI file, whether or not its name tells its compression right.

    Yields (image, notes); the image's voxels can be read inside the block.
    """
    compressed = _is_gzip(path)
    if compressed == path.name.lower().endswith(".gz"):
        yield nib.load(str(path)), ()
        return
    note = "gzip-compressed although named .nii" if compressed else "not compressed although named .nii.gz"
    with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
        try:
            image = nib.Nifti1Image.from_stream(stream)
        except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError):
            stream.seek(0)
            image = nib.Nifti2Image.from_stream(stream)
        yield image, (note,)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, float, float, tuple[str, ...]]:
    """The stored (unscaled) array, the affine, the scaling slope and intercept, and notes."""
    with _nibabel_messages() as fixes, _opened_nifti(path) as (image, notes):
        if image.header.get("qform_code", 0) == 0 and image.header.get("sform_code", 0) == 0:
            # nibabel silently turns zero spacing into 1 mm; read the raw header to refuse it instead
            with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as handle:
                raw = type(image.header).from_fileobj(handle, check=False)
            ndim = int(raw["dim"][0])
            if any(float(z) <= 0 for z in raw["pixdim"][1 : 1 + min(3, ndim)]):
                zooms = ", ".join(f"{float(z):g}" for z in raw["pixdim"][1:4])
                raise InputError(f"{path}: the file has no usable voxel spacing (pixdim {zooms})")
        proxy = image.dataobj
        slope, inter = _scaling(proxy)
        if _is_gzip(path) and isinstance(proxy, nib.arrayproxy.ArrayProxy):
            array = _read_gzip_voxels(path, proxy)
        else:
            array = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
        return array, image.affine, slope, inter, (*(f"{note}; read as such" for note in notes), *fixes)


def _read_gzip_voxels(path: Path, proxy: nib.arrayproxy.ArrayProxy) -> np.ndarray:
    """The stored voxels of a gzipped NIfTI, decompressed straight into the array in blocks.

    One copy of the data instead of two (gzip's ``read`` builds a full-size bytes object first), and
    Ctrl-C / SIGTERM take effect between blocks instead of after the whole file.

    Raises:
        EOFError: the file ends before the voxel data does.
    """
    shape, dtype = tuple(int(n) for n in proxy.shape), np.dtype(proxy.dtype)
    buffer = np.empty(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, dtype=np.uint8)
    view = memoryview(buffer)
    with gzip.open(path, "rb") as stream:
        stream.seek(int(proxy.offset))
        done = 0
        while done < buffer.size:
            read = stream.readinto(view[done : done + _READ_BLOCK])
            if not read:
                raise EOFError(f"the file ends after {done} of {buffer.size} bytes of voxel data (truncated?)")
            done += read
    return np.ndarray(shape, dtype=dtype, buffer=buffer, order=proxy.order)


def _scaling(proxy: object) -> tuple[float, float]:
    """NIfTI scl_slope and scl_inter as nibabel applies them (1 and 0 when unset)."""
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    array, header = nrrd.read(str(path))
    affine, notes = _nrrd_affine(header, path)
    return array, affine, notes


def _nrrd_dtype(header: dict) -> np.dtype | None:
    try:
        return np.dtype(nrrd.reader._determine_datatype(header))
    except Exception:  # noqa: BLE001 - pynrrd internals: the type is checked again after reading
        return None


def _nrrd_affine(header: dict, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """The voxel-to-RAS matrix of an NRRD header; with only ``spacings``, ITK's (and Slicer's) LPS axes."""
    directions = header.get("space directions")
    notes: tuple[str, ...] = ()
    if directions is None:
        spacings = [float(s) for s in header.get("spacings", []) if s is not None and np.isfinite(float(s))]
        if len(spacings) != 3:
            raise InputError(f"{path}: the NRRD header has no 'space directions' and no 3 'spacings' (voxel size)")
        directions = np.diag(np.abs(spacings))
        notes = ("the NRRD header has 'spacings' but no orientation: assuming LPS axes, as ITK and Slicer do",)
        space = "left-posterior-superior"
    else:
        directions = np.array([d for d in directions if d is not None and not np.any(np.isnan(np.asarray(d, float)))])
        space = header.get("space", "left-posterior-superior")
    if directions.shape != (3, 3):
        raise InputError(f"{path}: expected a 3D NRRD image, got space directions {directions.tolist()}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = directions.T
    affine[:3, 3] = origin
    if space in _NRRD_SPACES_LPS:
        affine = LPS_TO_RAS @ affine
    elif space not in _NRRD_SPACES_RAS:
        raise InputError(f"{path}: unsupported NRRD space '{space}'")
    return affine, notes


def save_volume(
    volume: Volume, path: str | os.PathLike, overwrite: bool = False, like: ImageHeader | None = None
) -> Path:
    """Write a Volume as NIfTI or NRRD (chosen by suffix), atomically.

    The file appears complete or not at all. An existing file is kept unless ``overwrite`` is true.
    ``like``: the header of the NIfTI input whose grid ``volume`` lies on; its sform and qform (with
    their codes) are copied, so the output lines up with that input in every viewer, whichever of the
    two transforms the viewer reads.

    Raises:
        OutputError: the file exists (and overwrite is false) or cannot be written.
    """
    path = Path(path)
    kind = image_format(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: file exists (pass overwrite to replace it)")
    with atomic_path(path) as tmp:
        if kind == "nifti":
            _write_nifti(volume, str(tmp), like)
        else:
            _write_nrrd(volume, str(tmp))
    return path


def _write_nifti(volume: Volume, path: str, like: ImageHeader | None = None) -> None:
    image = nib.Nifti1Image(volume.array, volume.affine)
    if _copies_transforms(volume, like):
        image.header.set_qform(like.qform, code=like.qform_code)  # type: ignore[union-attr]
        image.header.set_sform(like.sform, code=like.sform_code)  # type: ignore[union-attr]
    else:
        image.header.set_qform(volume.affine, code=1)
        image.header.set_sform(volume.affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _copies_transforms(volume: Volume, like: ImageHeader | None) -> bool:
    """True when ``like`` holds NIfTI transforms and ``volume`` lies on the grid the loader read from them."""
    return (
        like is not None
        and (like.sform_code > 0 or like.qform_code > 0)
        and tuple(like.shape[:3]) == volume.shape
        and np.allclose(like.affine, volume.affine, atol=1e-4)
    )


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
