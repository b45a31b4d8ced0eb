"""Capture: the hooks on a user's model and optimizer, and the watcher that owns them.

`watcher.py` wires hooks to the step accounting and the accumulator and owns every handle.
"""

from __future__ import annotations

from .watcher import Watcher, watch

__all__ = ["Watcher", "watch"]
