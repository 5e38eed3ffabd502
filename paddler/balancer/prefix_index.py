"""Which agents hold which prompt prefixes: the links their snapshots report, the links of the
requests sent to them since, and an inverted index from link to agents, so a request's holders
are found in one walk down its chain whatever the size of the fleet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from paddler.common.prefix_chain import MAX_PREFIX_HASHES, PrefixChain

if TYPE_CHECKING:
    from paddler.balancer.agent_registry import RegisteredAgent

MAX_LINKS_PER_AGENT = 2 * MAX_PREFIX_HASHES
"""The most links kept for one agent: its last snapshot's and those of the requests sent to it
since, until the next snapshot."""


class PrefixIndex:
    """Links by agent and agents by link."""

    def __init__(self) -> None:
        self._holders: dict[int, list[RegisteredAgent]] = {}
        self._links: dict[str, frozenset[int]] = {}

    def __len__(self) -> int:
        """Links held by some agent."""
        return len(self._holders)

    def reported(self, agent: RegisteredAgent, links: Iterable[int]) -> None:
        """A snapshot: what ``agent`` holds now is what it reported, plus the links of the
        requests it is still running (their prompts may not have reached its slots yet)."""
        held = set(links)
        for claim in agent.streams:
            held.update(claim.demand.links)
        self._replace(agent, frozenset(list(held)[:MAX_LINKS_PER_AGENT]))

    def sent(self, agent: RegisteredAgent, links: tuple[int, ...]) -> None:
        """A request with ``links`` went to ``agent``: it holds them from now on (until a
        snapshot says otherwise)."""
        held = self._links.get(agent.agent_id, frozenset())
        if links and len(held) < MAX_LINKS_PER_AGENT and not held.issuperset(links):
            self._replace(agent, held.union(links))

    def forget(self, agent: RegisteredAgent) -> None:
        """The agent left."""
        self._replace(agent, frozenset())
        self._links.pop(agent.agent_id, None)

    def holders(self, chain: PrefixChain) -> dict[str, int]:
        """For every agent holding some of ``chain``: how many of its first links the agent
        holds (the deepest it reported)."""
        found: dict[str, int] = {}
        hashes = chain.hashes
        for index in range(len(hashes) - 1, -1, -1):
            for agent in self._holders.get(hashes[index], ()):
                found.setdefault(agent.agent_id, index + 1)
        return found

    def _replace(self, agent: RegisteredAgent, held: frozenset[int]) -> None:
        before = self._links.get(agent.agent_id, frozenset())
        for link in before - held:
            holders = self._holders[link]
            holders.remove(agent)
            if not holders:
                del self._holders[link]
        for link in held - before:
            self._holders.setdefault(link, []).append(agent)
        self._links[agent.agent_id] = held
