"""Exceptions the engine raises with a one-line, user-facing message."""


class LungTumorSegError(Exception):
    """Base class: the message is meant to be shown to the user as it is."""


class InputError(LungTumorSegError):
    """The input image or label cannot be used (dimensionality, spacing, intensities, file)."""


class BundleError(LungTumorSegError):
    """A model bundle is missing, malformed or fails its checksum."""


class OutputError(LungTumorSegError):
    """Outputs cannot be written (folder not writable, file exists and overwrite not allowed)."""


class CancelledError(LungTumorSegError):
    """The run was cancelled by the user."""
