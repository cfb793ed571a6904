"""Explainers and simulators behind one interface (``Backend``), chosen by ``cfg.autointerp.backend``.

Backends share one interface (``Backend``: ``explain(examples) -> str``, ``simulate(explanation, tokens) ->
list[int]``) and are chosen by ``cfg.autointerp.backend``:

- ``"openai"``: any OpenAI-compatible chat-completions API (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
  ``AUTOINTERP_MODEL``), through the official ``openai`` SDK (its retries, backoff, Retry-After and timeouts).
- ``"hf"``: a local instruction-tuned HF transformers model (``cfg.autointerp.hf_model``), for GPU sessions.
- ``"offline"``: a statistical baseline with no language model; its explanation lists the feature's most
  characteristic tokens and preceding tokens, and its simulator parses that text back (it sees nothing else).

Language-model replies are cached on disk by (backend, model, prompt), one JSON file per reply written
atomically, so a rerun makes no requests and gives the same scores.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.artifacts import run_dir
from .clients import ChatClient, HFChat, Messages, OpenAIChat, ResponseCache
from .protocol import EXPLANATION_PREFIX, N_LEVELS, AutointerpError, Backend, Example


def _quote(token: str) -> str:
    # JSON string quoting keeps whitespace, quotes and newlines in tokens unambiguous and parseable
    return json.dumps(token, ensure_ascii=False)


_QUOTED_WEIGHT = re.compile(r'("(?:[^"\\]|\\.)*")\s*\((\d)\)')


class OfflineBackend:
    """A statistical explainer/simulator that needs no language model (the baseline where none is reachable).

    Explanation: the tokens whose examples have the highest mean activation, each with that mean, then the
    preceding tokens shared by many strong examples ("often after ..."). Simulation parses those lists back
    out of the text and predicts, for each token, the larger of its own weight and its predecessor's.
    """

    name = "offline"
    model = "token-statistics"

    def __init__(self, max_tokens: int = 10, max_contexts: int = 5, min_context_share: float = 0.25):
        self.max_tokens = max_tokens
        self.max_contexts = max_contexts
        # a preceding token counts as context only if it precedes this share of the strong examples
        # (and at least two), so a feature on ' =' is not credited to whichever name came before it twice
        self.min_context_share = min_context_share

    def explain(self, examples: Sequence[Example]) -> str:
        """List the characteristic tokens and contexts of the examples as an explanation sentence."""
        by_token: dict[str, list[int]] = defaultdict(list)
        for ex in examples:
            by_token[ex.token].append(ex.activation)
        weights = {tok: round(float(np.mean(acts))) for tok, acts in by_token.items()}
        tokens = sorted((t for t in weights if weights[t] >= 1), key=lambda t: (-weights[t], -len(by_token[t]), t))
        tokens = tokens[: self.max_tokens]
        if not tokens:
            return f"{EXPLANATION_PREFIX} nothing in particular."
        strong = [ex for ex in examples if ex.activation >= N_LEVELS // 2 and ex.context]
        before = Counter(ex.context[-1] for ex in strong)
        contexts = [
            tok
            for tok, count in before.most_common()
            if count >= 2 and count >= self.min_context_share * len(strong)
        ][: self.max_contexts]
        text = f"{EXPLANATION_PREFIX} the tokens " + ", ".join(f"{_quote(t)} ({weights[t]})" for t in tokens)
        if contexts:
            context_weight = {
                c: round(float(np.mean([ex.activation for ex in strong if ex.context[-1] == c]))) for c in contexts
            }
            text += ", often after " + ", ".join(f"{_quote(c)} ({context_weight[c]})" for c in contexts)
        return text + "."

    @staticmethod
    def parse_explanation(explanation: str) -> tuple[dict[str, int], dict[str, int]]:
        """Token weights and preceding-token weights written in an offline explanation."""
        head, _, tail = explanation.partition(", often after ")
        parse = lambda text: {json.loads(q): int(w) for q, w in _QUOTED_WEIGHT.findall(text)}  # noqa: E731
        return parse(head), parse(tail)

    def simulate(self, explanation: str, tokens: Sequence[str]) -> list[int]:
        """Predict each token's activation from the weights written in the explanation."""
        token_weight, after_weight = self.parse_explanation(explanation)
        predicted = []
        for i, tok in enumerate(tokens):
            previous = after_weight.get(tokens[i - 1], 0) if i > 0 else 0
            predicted.append(max(token_weight.get(tok, 0), previous))
        return predicted


EXPLAIN_SYSTEM = (
    "You are a meticulous interpretability researcher. You study one feature of a sparse autoencoder trained "
    "on the activations of a small language model of code and stories. You are shown tokens together with the "
    "feature's activation on them, an integer from 0 (silent) to 9 (strongest), and the text just before each "
    "token. Explain in one short phrase what the feature responds to."
)


SIMULATE_SYSTEM = (
    "You are simulating one feature of a sparse autoencoder from its explanation alone. For every token of "
    "the text, predict the feature's activation as an integer from 0 (silent) to 9 (strongest)."
)


def explain_messages(examples: Sequence[Example]) -> list[dict[str, str]]:
    """Chat messages asking for an explanation of the examples (one line per example)."""
    lines = [
        f"{i + 1}. token {_quote(ex.token)}, activation {ex.activation}, after {_quote(''.join(ex.context))}"
        for i, ex in enumerate(examples)
    ]
    user = (
        "Examples (token, activation 0-9, preceding text):\n"
        + "\n".join(lines)
        + f'\n\nComplete this sentence in one line, nothing else: "{EXPLANATION_PREFIX} ..."'
    )
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def parse_explanation(reply: str) -> str:
    """The explanation sentence in a reply, always starting with EXPLANATION_PREFIX."""
    lines = [line.strip().strip('"').strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        raise AutointerpError(f"the explainer returned an empty reply: {reply!r}")
    for line in lines:  # prefer the line that completes the sentence, if the model added chatter
        if line.lower().startswith(EXPLANATION_PREFIX.lower()):
            return EXPLANATION_PREFIX + line[len(EXPLANATION_PREFIX) :]
    text = lines[0].lstrip(". ")
    return f"{EXPLANATION_PREFIX} {text}"


def simulate_messages(explanation: str, tokens: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages asking for one 0-9 activation per token, as a JSON list."""
    listing = "\n".join(f"{i + 1}. {_quote(tok)}" for i, tok in enumerate(tokens))
    user = (
        f"Explanation of the feature: {explanation}\n\nThe text, one token per line ({len(tokens)} tokens):\n"
        f"{listing}\n\nReply with only a JSON list of exactly {len(tokens)} integers from 0 to 9, "
        "one per token in order."
    )
    return [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]


def parse_simulation(reply: str, n_tokens: int) -> list[int]:
    """The list of ``n_tokens`` activations in a reply (the last JSON list in it), clipped to 0..9."""
    for match in reversed(re.findall(r"\[[^\[\]]*\]", reply)):
        try:
            values = json.loads(match)
        except json.JSONDecodeError:
            continue
        if isinstance(values, list) and len(values) == n_tokens and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            return [int(min(N_LEVELS - 1, max(0, round(v)))) for v in values]
    raise AutointerpError(
        f"the simulator's reply has no JSON list of {n_tokens} numbers (reply starts {reply[:300]!r})"
    )


class ChatBackend:
    """Explainer and simulator through a chat model, with the disk cache in front of it."""

    def __init__(
        self,
        name: str,
        chat: ChatClient,
        explainer_model: str,
        simulator_model: str,
        temperature: float = 0.0,
        cache: ResponseCache | None = None,
    ):
        self.name = name
        self.chat = chat
        self.explainer_model = explainer_model
        self.simulator_model = simulator_model
        self.model = explainer_model if explainer_model == simulator_model else f"{explainer_model}+{simulator_model}"
        self.temperature = temperature
        self.cache = cache

    @property
    def endpoint(self) -> str:
        """Where replies come from (the server's URL, or the local model's id): part of every cache key."""
        return str(getattr(self.chat, "base_url", None) or getattr(self.chat, "model_id", None) or type(self.chat).__name__)

    def _complete(self, messages: Messages, model: str, max_tokens: int) -> str:
        request = {"messages": messages, "temperature": self.temperature, "max_tokens": max_tokens}
        key = ResponseCache.key(f"{self.name}@{self.endpoint}", model, request)  # replies of one server only
        if self.cache is not None and (reply := self.cache.get(key)) is not None:
            return reply
        reply = self.chat.complete(messages, model, self.temperature, max_tokens)
        if self.cache is not None:
            self.cache.put(key, reply, {"backend": self.name, "model": model, **request})
        return reply

    def explain(self, examples: Sequence[Example]) -> str:
        """Ask the explainer model to complete the explanation sentence."""
        return parse_explanation(self._complete(explain_messages(examples), self.explainer_model, 80))

    def simulate(self, explanation: str, tokens: Sequence[str]) -> list[int]:
        """Ask the simulator model for one activation per token."""
        reply = self._complete(simulate_messages(explanation, tokens), self.simulator_model, 8 * len(tokens) + 32)
        return parse_simulation(reply, len(tokens))


def make_backend(cfg, cache_dir: Path | None = None) -> Backend:
    """The backend named by ``cfg.autointerp.backend``; replies cached in ``cache_dir`` (default: run folder).

    ``AUTOINTERP_MODEL`` overrides the explainer and simulator model of the "openai" backend.
    """
    ai = cfg.autointerp
    if ai.backend == "offline":
        return OfflineBackend()
    cache = ResponseCache(cache_dir or run_dir(cfg.profile) / "autointerp-cache")
    if ai.backend == "openai":
        explainer = os.environ.get("AUTOINTERP_MODEL") or ai.explainer_model
        simulator = os.environ.get("AUTOINTERP_MODEL") or ai.simulator_model
        chat = OpenAIChat(timeout_s=ai.request_timeout_s, max_retries=ai.max_retries)
        return ChatBackend("openai", chat, explainer, simulator, ai.temperature, cache)
    if ai.backend == "hf":
        return ChatBackend("hf", HFChat(ai.hf_model), ai.hf_model, ai.hf_model, ai.temperature, cache)
    raise ValueError(f"unknown autointerp backend {ai.backend!r}; choose 'offline', 'openai' or 'hf'")
