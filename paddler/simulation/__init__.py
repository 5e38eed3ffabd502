"""Simulated agents: a fake engine behind the agent's real protocols, for fleets at scale only."""
