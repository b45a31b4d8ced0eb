"""Capture: the hooks on a user's model and optimizer, and the watcher that owns them.

- `hooks.py`: the hook wrapper (never raises into training) and every private torch call;
- `clock.py`: the step clock, where steps begin and end, decided from events alone;
- `probes.py`: what each hook measures; `meta.py`: what besides the numbers goes into the record;
- `watcher.py`: wires hooks to the clock and the accumulator, and owns every handle.
"""

from __future__ import annotations

from .watcher import Watcher, watch

__all__ = ["Watcher", "watch"]
