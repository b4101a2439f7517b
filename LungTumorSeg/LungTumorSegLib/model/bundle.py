"""Model bundles: a manifest plus weights files, checksum-verified and loaded without pickle.

Layout (DESIGN section 4)::

    <bundle>/manifest.json
    <bundle>/<member>.safetensors      (or .pt state_dict, loaded with weights_only=True)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..core.errors import BundleError
from .model_names import (  # noqa: F401 - the folder helpers are torch-free, re-exported here
    BUNDLED_MODELS_DIR,
    MANIFEST,
    USER_MODELS_ENV,
    default_model,
    list_bundles,
    user_models_dir,
)
from .networks import ARCHITECTURES, build_network, size_multiple
from .sensitivity_presets import preset_problem

FORMAT_VERSION = 1
# buffers the network constructor recomputes; bundles need not store them
DERIVED_BUFFERS = ("relative_position_index",)


@dataclass
class MemberSpec:
    """One network of the ensemble as the manifest describes it."""

    name: str
    file: str
    architecture: str
    kwargs: dict[str, Any]
    weight: float
    sha256: str
    patch_size: tuple[int, int, int] | None = None  # this member's sliding window, when not the bundle's


@dataclass
class ModelBundle:
    """A parsed, validated bundle manifest (weights not loaded yet)."""

    path: Path
    manifest: dict[str, Any]
    members: list[MemberSpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def input(self) -> dict[str, Any]:
        return self.manifest["input"]

    @property
    def output(self) -> dict[str, Any]:
        return self.manifest["output"]

    @property
    def tta(self) -> dict[str, Any]:
        return self.manifest.get("tta", {"flips": 1})

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.input["spacing_mm"])  # type: ignore[return-value]

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.input["patch_size"])  # type: ignore[return-value]

    def load_networks(self, device: torch.device | str = "cpu") -> list[tuple[MemberSpec, nn.Module]]:
        """Verify every weights file's sha256, then build and load each member in eval mode."""
        networks = []
        for member in self.members:
            weights_path = self.path / member.file
            verify_sha256(weights_path, member.sha256)
            state = load_state_dict(weights_path)
            try:
                network = build_network(member.architecture, member.kwargs)
            except ValueError as exc:
                raise BundleError(f"{self.path / MANIFEST}: member {member.name}: {exc}") from exc
            try:
                missing, unexpected = network.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
            except RuntimeError as exc:
                raise BundleError(
                    f"{weights_path}: weights do not match {member.architecture} {member.kwargs}"
                ) from exc
            missing = [key for key in missing if not key.endswith(DERIVED_BUFFERS)]
            if missing or unexpected:
                raise BundleError(
                    f"{weights_path}: weights do not match {member.architecture}: "
                    f"missing {missing[:3]}, unexpected {unexpected[:3]}"
                )
            networks.append((member, network.to(device).eval()))
        return networks


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise BundleError unless ``path`` exists and has the expected sha256."""
    if not path.is_file():
        raise BundleError(f"{path}: weights file missing")
    actual = sha256_of(path)
    if actual != expected:
        raise BundleError(
            f"{path}: checksum mismatch (expected {expected[:12]}…, got {actual[:12]}…); file altered or corrupt"
        )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load weights without executing pickled code (safetensors, or torch.load weights_only)."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing; the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next(
            (line for line in reversed(lines) if "Unsupported" in line or "GLOBAL" in line), lines[-1] if lines else ""
        )
        raise BundleError(
            f"{path}: cannot load weights safely: the file holds pickled Python objects, not only tensors ({detail})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad bundle
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise BundleError(f"{path}: cannot load weights ({type(exc).__name__}: {first})") from exc


def read_bundle(path: str | os.PathLike) -> ModelBundle:
    """Parse and validate ``path/manifest.json``."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from exc
    validate_manifest(manifest, manifest_path)
    members = [
        MemberSpec(
            name=str(m.get("name", Path(m["file"]).stem)),
            file=str(m["file"]),
            architecture=str(m["architecture"]),
            kwargs=dict(m.get("kwargs", {})),
            weight=float(m.get("weight", 1.0)),
            sha256=str(m["sha256"]),
            patch_size=tuple(int(s) for s in m["patch_size"]) if m.get("patch_size") else None,
        )
        for m in manifest["members"]
    ]
    return ModelBundle(path=path, manifest=manifest, members=members)


def validate_manifest(manifest: dict[str, Any], where: Path | str = "manifest") -> None:
    """Raise BundleError naming the first missing or invalid manifest field."""

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise BundleError(f"{where}: {message}")

    def numbers(value: Any, count: int | None, field: str) -> list[float]:
        """``value`` as a list of finite numbers (of ``count`` items), or a BundleError naming ``field``."""
        items = value if isinstance(value, (list, tuple)) else [value]
        try:
            parsed = [float(v) for v in items if not isinstance(v, (bool, str))]
        except (TypeError, ValueError):
            parsed = []
        ok = len(parsed) == len(items) and all(math.isfinite(v) for v in parsed)
        need(ok and (count is None or len(parsed) == count), f"{field} must be {count or 'a'} number(s), got {value!r}")
        return parsed

    need(isinstance(manifest, dict), "manifest must be a JSON object")
    for key in ("name", "version", "members", "input", "output"):
        need(key in manifest, f"missing '{key}'")
    need(
        numbers(manifest.get("format_version", FORMAT_VERSION), None, "format_version")[0] <= FORMAT_VERSION,
        "made by a newer LungTumorSeg",
    )
    need(isinstance(manifest["members"], list) and manifest["members"], "'members' must be a non-empty list")
    for member in manifest["members"]:
        need(isinstance(member, dict), "every member must be a JSON object")
        for key in ("file", "architecture", "sha256"):
            need(key in member, f"member {member.get('name', '?')}: missing '{key}'")
        need(
            member["architecture"] in ARCHITECTURES,
            f"member {member.get('name', '?')}: unknown architecture {member['architecture']!r} "
            f"(known: {', '.join(ARCHITECTURES)})",
        )
        need(isinstance(member.get("kwargs", {}), dict), f"member {member.get('name', '?')}: kwargs must be an object")
        weight = numbers(member.get("weight", 1.0), 1, f"member {member.get('name', '?')}: weight")[0]
        need(weight >= 0, f"member {member.get('name', '?')}: negative weight")
        need(
            isinstance(member["file"], str)
            and not Path(member["file"]).is_absolute()
            and ".." not in Path(member["file"]).parts,
            f"member file {member['file']!r} must be inside the bundle",
        )
        if member.get("patch_size"):
            numbers(member["patch_size"], 3, f"member {member.get('name', '?')}: patch_size")
    need(sum(float(m.get("weight", 1.0)) for m in manifest["members"]) > 0, "member weights sum to 0")
    spec = manifest["input"]
    need(isinstance(spec, dict) and isinstance(manifest["output"], dict), "'input' and 'output' must be objects")
    for key in ("spacing_mm", "hu_window", "patch_size"):
        need(key in spec, f"input: missing '{key}'")
    need(all(s > 0 for s in numbers(spec["spacing_mm"], 3, "input.spacing_mm")), "input.spacing_mm must be > 0")
    window = numbers(spec["hu_window"], 2, "input.hu_window")
    need(window[0] < window[1], "input.hu_window must be LOW < HIGH")
    patch = numbers(spec["patch_size"], 3, "input.patch_size")
    need(all(p >= 1 and p == int(p) for p in patch), "input.patch_size must be 3 positive whole numbers")
    overlap = numbers(spec.get("overlap", 0.25), 1, "input.overlap")[0]
    need(0.0 <= overlap <= 0.9, "input.overlap must be in [0, 0.9]")
    for member in manifest["members"]:
        multiple = size_multiple(member["architecture"], member.get("kwargs", {}))
        need(
            all(int(s) % multiple == 0 for s in patch),
            f"input.patch_size {spec['patch_size']} must be a multiple of {multiple} for {member['architecture']}",
        )
    threshold = numbers(manifest["output"].get("threshold", 0.5), 1, "output.threshold")[0]
    need(0.0 <= threshold <= 1.0, "output.threshold must be in [0, 1]")
    numbers(manifest["output"].get("min_lesion_ml", 0.0), 1, "output.min_lesion_ml")
    peak = numbers(manifest["output"].get("min_peak_probability", 0.0), 1, "output.min_peak_probability")[0]
    need(0.0 <= peak <= 1.0, "output.min_peak_probability must be in [0, 1]")
    problem = preset_problem(manifest["output"])
    need(problem is None, str(problem))


def find_bundle(name_or_path: str | None) -> ModelBundle:
    """A bundle by folder path, or by name among the bundled and user-installed ones."""
    if name_or_path and Path(name_or_path).is_dir():
        return read_bundle(name_or_path)
    bundles = list_bundles()
    name = name_or_path or default_model(bundles)
    if name is None or name not in bundles:
        known = ", ".join(bundles) or "none installed"
        raise BundleError(f"model {name!r} not found (known: {known})")
    return read_bundle(bundles[name])
