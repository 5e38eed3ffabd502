"""How often an agent sends a status snapshot when nothing changes, and what that implies."""

from __future__ import annotations

# An idle agent's snapshots are this far apart (busy agents send one on every change).
STATUS_INTERVAL_S = 1.0
# The smallest --agent-stale-after that never removes an idle, healthy agent between two
# snapshots: twice the interval, so one late snapshot is not a death sentence.
MIN_STALE_AFTER_S = 2 * STATUS_INTERVAL_S
