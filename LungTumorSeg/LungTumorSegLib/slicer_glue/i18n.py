"""Slicer's translation function in Slicer; the text unchanged where Slicer's GUI is absent (slicer-core, pytest)."""

from __future__ import annotations

try:
    from slicer.i18n import tr
except ImportError:  # slicer-core (MRML without Qt) and plain Python

    def tr(text: str) -> str:
        """The text as it is (no translation catalogue without Slicer's application)."""
        return text
