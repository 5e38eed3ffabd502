"""What an agent reports about the desired state: phase, version, issues, download progress."""

from __future__ import annotations

from dataclasses import dataclass, field

from paddler.v1 import status_pb2


@dataclass
class StateReport:
    """Mutated by the model host, read into every status snapshot."""

    phase: status_pb2.StatePhase.ValueType = status_pb2.STATE_PHASE_UNSPECIFIED
    applied_version: int = 0
    applied_epoch: str = ""
    attempted_version: int = 0
    attempted_epoch: str = ""
    issues: list[str] = field(default_factory=list)
    bytes_done: int = 0
    bytes_total: int = 0

    def fill(self, status: status_pb2.AgentStatus) -> None:
        """Copy the report into a snapshot."""
        status.phase = self.phase
        status.applied_state_version = self.applied_version
        status.applied_state_epoch = self.applied_epoch
        status.attempted_state_version = self.attempted_version
        status.attempted_state_epoch = self.attempted_epoch
        status.issues.extend(self.issues)
        if self.phase == status_pb2.STATE_PHASE_APPLYING and self.bytes_done:
            status.download.bytes_done = self.bytes_done
            status.download.bytes_total = self.bytes_total
