"""One request's grammar in its slot: masks the logits before each draw, follows each token."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import llama_cpp as llama
import numpy as np
import structlog
from llguidance import LLMatcher, LLTokenizer
from llguidance.llamacpp import lltokenizer_from_vocab

from paddler.common.errors import InvalidArgumentError
from paddler.common.grammar import GRAMMAR_LIMITS

log = structlog.get_logger(__name__)


class GrammarConstraint:
    """Tokens the grammar does not allow get a logit of -inf, so no sampler can draw them.

    With a ``trigger`` the grammar is lazy: the text is free until the trigger has been
    generated, and the grammar holds for what follows it.
    """

    def __init__(
        self,
        matcher: LLMatcher,
        n_vocab: int,
        tokenizer: LLTokenizer,
        trigger: str | None = None,
    ) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._tokenizer = tokenizer
        self._mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self._trigger = trigger.encode() if trigger else b""
        self._seen = b""

    def restrict(self, logits: Any) -> None:
        """Mask the ``n_vocab`` floats at ``logits`` (llama.cpp's row for one batch position)."""
        if self._trigger:
            return
        self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        allowed = np.unpackbits(self._mask.view(np.uint8), count=self._n_vocab, bitorder="little")
        row = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        row[allowed == 0] = -np.inf

    def accept(self, token: int, piece: bytes) -> bool:
        """Advance past ``token`` (whose text is ``piece``); False when the grammar refuses it."""
        if not self._trigger:
            return bool(self._matcher.consume_token(token))
        self._seen += piece
        found = self._seen.find(self._trigger)
        if found < 0:
            self._seen = self._seen[-len(self._trigger) :]
            return True
        rest = self._seen[found + len(self._trigger) :]
        self._trigger = b""  # from here on the grammar holds
        return not rest or bool(self._matcher.consume_tokens(self._tokenizer.tokenize_bytes(rest)))

    @property
    def complete(self) -> bool:
        """Whether the grammar allows nothing more (a JSON value, or a call, is closed)."""
        return not self._trigger and bool(self._matcher.is_stopped())

    @property
    def error(self) -> str:
        """Why the matcher failed, when ``accept`` returned False."""
        return str(self._matcher.get_error())


class GrammarCompiler:
    """Builds constraints for one model, from an llguidance tokenizer made once (``prepare``,
    at model load)."""

    def __init__(self, vocab: Any, n_vocab: int) -> None:
        self._vocab = vocab
        self._n_vocab = n_vocab
        self._tokenizer: LLTokenizer | None = None
        self._lock = threading.Lock()

    def constraint(self, grammar: str, field: str, trigger: str | None = None) -> GrammarConstraint:
        """A fresh constraint for ``grammar`` (an llguidance grammar), lazy until ``trigger``
        when one is given. Blocking."""
        tokenizer = self.prepare()
        matcher = LLMatcher(tokenizer, grammar, limits=GRAMMAR_LIMITS)
        if matcher.is_error():
            raise InvalidArgumentError(field, f"cannot be served: {matcher.get_error()}")
        return GrammarConstraint(matcher, self._n_vocab, tokenizer, trigger)

    def prepare(self) -> LLTokenizer:
        """The tokenizer, built on the first call (about 0.2 s for a 49k vocabulary, 2 s for
        262k; blocking): the model's load makes it, so no request waits for it."""
        with self._lock:
            if self._tokenizer is None:
                started = time.perf_counter()
                ends = [t for t in range(self._n_vocab) if llama.llama_vocab_is_eog(self._vocab, t)]
                # llguidance reads each token's attributes through a name llama-cpp-python
                # deprecated: one warning per token of the vocabulary, otherwise.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tokenizer = lltokenizer_from_vocab(self._vocab, eos_token=ends)
                log.info(
                    "grammar tokenizer built",
                    vocabulary=self._n_vocab,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
            return self._tokenizer
