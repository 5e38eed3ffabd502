"""Which agents hold which prompt prefixes: the links their snapshots report, those of the
requests they have prefilled since (a stream that relayed a message), and an inverted index from
link to agents, so a request's holders are found in one walk down its chain whatever the size of
the fleet. A request still prefilling counts for nothing: another request sent to its agent
would prefill beside it rather than reuse it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paddler.common.prefix_chain import MAX_PREFIX_HASHES

if TYPE_CHECKING:
    from paddler.balancer.agent_registry import RegisteredAgent
    from paddler.balancer.stream_claim import Demand

MAX_LINKS_PER_AGENT = 2 * MAX_PREFIX_HASHES
"""The most links kept for one agent: its last snapshot's and those of the requests sent to it
since, until the next snapshot."""

WIDE = 16
"""Agents holding one link beyond which its holders are kept as a set and a request's walk
checks them by membership rather than listing them (a system prompt the whole fleet holds)."""

_Holders = list["RegisteredAgent"] | set["RegisteredAgent"]


@dataclass(frozen=True)
class Holdings:
    """How much of one request's prompt agents hold: ``deep`` lists the holders of links few
    agents hold, with the deepest such link; ``wide`` the links many hold, deepest first."""

    demand: Demand
    deep: dict[RegisteredAgent, int]
    wide: tuple[tuple[int, set[RegisteredAgent]], ...] = ()

    def links(self, agent: RegisteredAgent) -> int:
        """How many of the chain's first links ``agent`` holds."""
        links = self.deep.get(agent, 0)
        for wide_links, holders in self.wide:
            if wide_links <= links:
                break
            if agent in holders:
                return wide_links
        return links

    def tokens(self, agent: RegisteredAgent) -> int:
        """Prompt tokens ``agent`` need not prefill."""
        return self.demand.held_tokens(self.links(agent))


class PrefixIndex:
    """Links by agent and agents by link."""

    def __init__(self) -> None:
        self._holders: dict[int, _Holders] = {}
        self._links: dict[str, frozenset[int]] = {}

    def __len__(self) -> int:
        """Links held by some agent."""
        return len(self._holders)

    def reported(self, agent: RegisteredAgent, links: Iterable[int]) -> None:
        """A snapshot: what ``agent`` holds now is what it reported, plus the links of the
        requests it is running past their prefill (a snapshot may have left them out)."""
        held = set(links)
        for claim in agent.streams:
            if claim.relayed:
                held.update(claim.demand.links)
        self._replace(agent, frozenset(list(held)[:MAX_LINKS_PER_AGENT]))

    def sent(self, agent: RegisteredAgent, links: tuple[int, ...]) -> None:
        """``agent`` ran a request with ``links`` past its prefill: it holds them from now on
        (until a snapshot says otherwise)."""
        held = self._links.get(agent.agent_id, frozenset())
        if links and len(held) < MAX_LINKS_PER_AGENT and not held.issuperset(links):
            self._replace(agent, held.union(links))

    def forget(self, agent: RegisteredAgent) -> None:
        """The agent left."""
        self._replace(agent, frozenset())
        self._links.pop(agent.agent_id, None)

    def holdings(self, demand: Demand) -> Holdings:
        """Who holds how much of ``demand``'s prompt: one walk down its chain, deepest first."""
        deep: dict[RegisteredAgent, int] = {}
        wide: list[tuple[int, set[RegisteredAgent]]] = []
        hashes = demand.chain.hashes
        for index in range(len(hashes) - 1, -1, -1):
            holders = self._holders.get(hashes[index])
            if holders is None:
                continue
            if isinstance(holders, set):
                wide.append((index + 1, holders))
                continue
            for agent in holders:
                deep.setdefault(agent, index + 1)
        return Holdings(demand, deep, tuple(wide))

    def _replace(self, agent: RegisteredAgent, held: frozenset[int]) -> None:
        before = self._links.get(agent.agent_id, frozenset())
        for link in before - held:
            holders = self._holders[link]
            holders.remove(agent)
            if not holders:
                del self._holders[link]
        for link in held - before:
            holders = self._holders.setdefault(link, [])
            if isinstance(holders, set):
                holders.add(agent)
            elif len(holders) < WIDE:
                holders.append(agent)
            else:
                self._holders[link] = {*holders, agent}
        self._links[agent.agent_id] = held
