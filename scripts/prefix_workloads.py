"""The seeded workloads of `bench_prefix.py`: conversations whose prompts share prefixes the way
real traffic does (a user's own growing history, a few system prompts shared by many requests,
a coding agent's long system prompt and tools), and a control that shares none.

A workload is a list of sessions: one user's conversation, started at a seeded time, with its
system prompt, its questions (one a round) and the think times between rounds. The texts are
sentences of common words drawn from a seeded generator, so a seed gives the same prompts on
every front and in every sitting, and different seeds share nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MULTI_TURN = "multi-turn"
SHARED_PREFIX = "shared-prefix"
CODING_AGENT = "coding-agent"
UNIQUE = "unique"
WORKLOADS = (MULTI_TURN, SHARED_PREFIX, CODING_AGENT, UNIQUE)
# System prompt sizes in (about) tokens of the default model, before --system-scale.
SYSTEM_TOKENS = {MULTI_TURN: 700, SHARED_PREFIX: 800, CODING_AGENT: 4096, UNIQUE: 700}
# Users and rounds of the conversational workloads unless --users / --rounds say otherwise.
DEFAULT_USERS = {MULTI_TURN: 8, CODING_AGENT: 3}
DEFAULT_ROUNDS = {MULTI_TURN: 4, CODING_AGENT: 3}
# Measured on SmolLM2's tokenizer: these sentences take about 1.1 tokens a word.
TOKENS_PER_WORD = 1.1

VOCABULARY = """
    able account act add age air amount animal answer apple area arm army art autumn baby back
    bag ball bank base basket bath bear bed bell bird birth blade blood board boat body bone book
    boot border bottle box brain branch bread breath brick bridge brother brush bucket building
    button cake camera card care carpet cart castle cat chain chair chance change cheese chest
    child church circle city clock cloth cloud coal coast coat coffee collar colour comb company
    copper corn cotton country cover cow crack credit crime cup current curtain cushion dance
    daughter day death debt decision degree desert desk detail dinner direction dog door drain
    drawer dress drink driver dust ear earth edge egg engine error event evening example face fact
    family farm father feather field finger fire fish flag flame floor flower fly fog food foot
    forest fork frame friend fruit garden girl glass glove goat gold grain grass group guide gun
    hair hammer hand harbour hat head heart hill history hole holiday hook horn horse hospital
    hour house ice idea ink iron island jelly jewel journey judge kettle key king kitten knee
    knife knot lake lamp land language lead leaf letter library light line lip list lock machine
    map market meal meat memory metal milk mind minute mirror money monkey month moon morning
    mother mountain mouth music nail name nation needle nerve nest net news night noise north nose
    note number nut ocean office oil orange order oven owner page pain paint paper parcel park
    party passenger pencil person picture pig pin pipe place plane plant plate pocket poison
    porter pot potato powder prison prize promise pump queen question rail rain rat record river
    road rock roof room root rope rule sail salt sand school science scissors screw sea season
    seat seed sheep shelf ship shirt shoe side signal silk silver sister size skin sky sleep snake
    snow soap society sock soldier song sound soup space spoon spring square stage stamp star
    station steam stem stick stone store storm story street string sugar summer sun table tail
    teacher theory thread thumb ticket time toe tongue tooth town toy train tray tree trick
    trouble umbrella valley vessel view village voice wall watch water wave wax weather week
    wheel whip whistle window wine wing winter wire woman wood wool word worm writer yard year
"""
WORDS = tuple(VOCABULARY.split())
QUESTIONS = (
    "In one sentence, how is the {} like the {}?",
    "What does the text above say about the {} and the {}?",
    "Which comes first in the text above, the {} or the {}?",
)
# A coding agent's tools, as OpenAI's `tools` field writes them (JSON-schema parameters).
TOOLS: tuple[dict[str, object], ...] = tuple(
    {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }
    for name, description, parameters in (
        (
            "read_file",
            "Read a file of the repository and return its text.",
            {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path from the repository root."},
                    "start_line": {"type": "integer", "minimum": 1},
                    "end_line": {"type": "integer", "minimum": 1},
                },
                "required": ["path"],
            },
        ),
        (
            "write_file",
            "Replace a file's text, creating the file and its folders when missing.",
            {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path from the repository root."},
                    "content": {"type": "string", "description": "The file's new text."},
                },
                "required": ["path", "content"],
            },
        ),
        (
            "run_command",
            "Run a shell command in the repository and return its exit status and output.",
            {
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "timeout_s": {"type": "number", "minimum": 1, "maximum": 600},
                },
                "required": ["command"],
            },
        ),
        (
            "search_code",
            "Search the repository's files for a regular expression.",
            {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "glob": {"type": "string", "description": "Only files matching it."},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                "required": ["pattern"],
            },
        ),
    )
)


@dataclass(frozen=True)
class Sizes:
    """How big one workload is (users and rounds are the conversational workloads')."""

    users: int
    rounds: int
    think_s: float  # mean of the exponential think time between a user's rounds
    rate: float  # Poisson arrivals per second: of requests, or of users' first rounds
    requests: int  # requests of the one-round workloads (shared-prefix, unique)
    groups: int  # system prompts of shared-prefix
    system_scale: float  # multiplies SYSTEM_TOKENS

    def describe(self, workload: str) -> str:
        """The sizes that matter to ``workload``, in words."""
        system = f"system prompts of ~{self.system_tokens(workload)} tokens"
        if workload in DEFAULT_USERS:
            return (
                f"{self.users} users at {self.rate:g}/s, {self.rounds} rounds, think "
                f"{self.think_s:g} s, {system}"
            )
        groups = f"{self.groups} groups, " if workload == SHARED_PREFIX else ""
        return f"{self.requests} requests at {self.rate:g}/s, {groups}{system}"

    def system_tokens(self, workload: str) -> int:
        """The size of ``workload``'s system prompts, in tokens."""
        return max(1, round(SYSTEM_TOKENS[workload] * self.system_scale))


@dataclass(frozen=True)
class Session:
    """One user's conversation: the `X-Session` it sends, when its first round arrives (seconds
    from the start), its system prompt, one question a round, the think time after each round
    but the last, and the tools every request offers."""

    name: str
    start_s: float
    system: str
    questions: tuple[str, ...]
    thinks_s: tuple[float, ...] = ()
    tools: tuple[dict[str, object], ...] = ()


def sessions(workload: str, sizes: Sizes, seed: int) -> list[Session]:
    """The sessions of ``workload`` for ``seed``: the same on every front."""
    draw = random.Random(f"{workload}/{seed}")
    tokens = sizes.system_tokens(workload)
    if workload == SHARED_PREFIX:
        systems = [_text(draw, tokens) for _ in range(sizes.groups)]
        return [
            Session(f"request-{number}", start, draw.choice(systems), (_question(draw),))
            for number, start in enumerate(_arrivals(draw, sizes.rate, sizes.requests))
        ]
    if workload == UNIQUE:
        return [
            Session(f"request-{number}", start, _text(draw, tokens), (_question(draw),))
            for number, start in enumerate(_arrivals(draw, sizes.rate, sizes.requests))
        ]
    coding = workload == CODING_AGENT
    shared = "You are a coding agent working in a user's repository. " + _text(draw, tokens)
    return [
        Session(
            f"user-{number}",
            start,
            shared if coding else _text(draw, tokens),
            tuple(_task(draw) if coding else _question(draw) for _ in range(sizes.rounds)),
            tuple(
                draw.expovariate(1 / sizes.think_s) if sizes.think_s > 0 else 0.0
                for _ in range(sizes.rounds - 1)
            ),
            TOOLS if coding else (),
        )
        for number, start in enumerate(_arrivals(draw, sizes.rate, sizes.users))
    ]


def _arrivals(draw: random.Random, rate: float, count: int) -> list[float]:
    """``count`` Poisson arrival times at ``rate`` per second, the first at once."""
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += draw.expovariate(rate)
    return times


def _text(draw: random.Random, tokens: int) -> str:
    """Sentences of random words, about ``tokens`` long; its first words are random too, so two
    texts share no prefix."""
    words = max(1, round(tokens / TOKENS_PER_WORD))
    sentences = []
    while words > 0:
        count = min(words, draw.randint(8, 16))
        chosen = [draw.choice(WORDS) for _ in range(count)]
        sentences.append(" ".join(chosen).capitalize() + ".")
        words -= count
    return " ".join(sentences)


def _question(draw: random.Random) -> str:
    return draw.choice(QUESTIONS).format(draw.choice(WORDS), draw.choice(WORDS))


def _task(draw: random.Random) -> str:
    module, function = draw.choice(WORDS), draw.choice(WORDS)
    return f"Explain briefly what {function}_{draw.choice(WORDS)}() in src/{module}.py does."
