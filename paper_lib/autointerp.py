"""Automated interpretability: explain a feature from examples, simulate it from the explanation, score it.

The paper's protocol (Figure 6), following Bills et al. (2023):

1. Activations of a feature are min-max normalised to integers 0-9 over the text searched for examples.
2. About 40 (token, activation) examples are chosen (``select_examples``): up to 10 top activations, two from
   each other non-zero bin, 5 random positions, and the top tokens again in other contexts (so the explainer
   sees whether the token alone decides the activation).
3. An *explainer* completes "This feature looks mainly for ...".
4. A *simulator* predicts a 0-9 activation for every token of held-out text from the explanation alone.
5. The score is the Pearson correlation of simulated and true activations over all held-out tokens
   (``explanation_score``; see there for the constant cases).

The core works on plain arrays: token strings per block (``tokens_BT``) and one feature's activations per block
(``acts_BT``), so it is testable without any model or SAE. ``score_features`` wires it to the SAEs.

Backends share one interface (``Backend``: ``explain(examples) -> str``, ``simulate(explanation, tokens) ->
list[int]``) and are chosen by ``cfg.autointerp.backend``:

- ``"openai"``: any OpenAI-compatible chat-completions API (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
  ``AUTOINTERP_MODEL``), standard library only (urllib), with retries, backoff, Retry-After and timeouts.
- ``"hf"``: a local instruction-tuned HF transformers model (``cfg.autointerp.hf_model``), for GPU sessions.
- ``"offline"``: a statistical baseline with no language model; its explanation lists the feature's most
  characteristic tokens and preceding tokens, and its simulator parses that text back (it sees nothing else).

Language-model replies are cached on disk by (backend, model, prompt), one JSON file per reply written
atomically, so a rerun makes no requests and gives the same scores.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from paper_lib.artifacts import read_json, run_dir, stable_hash, write_json_atomic

N_LEVELS = 10  # activations are shown to the explainer and simulator as integers 0..9
EXPLANATION_PREFIX = "This feature looks mainly for"
CONTEXT_WINDOW = 8  # preceding tokens shown with each example
HOLDOUT_FRACTION = 0.2  # share of the searched blocks held out for simulation (never shown to the explainer)


class AutointerpError(RuntimeError):
    """A backend that cannot be reached, refuses a request or returns a reply that cannot be parsed."""


# ------------------------------------------------------------------------------------- examples and scores


@dataclass(frozen=True)
class Example:
    """One (token, activation) pair shown to the explainer, with the tokens before it."""

    token: str
    activation: int  # normalised, 0..9
    context: tuple[str, ...]  # up to CONTEXT_WINDOW preceding tokens of the same block, oldest first
    kind: str  # "top", "bin", "random" or "top_token_context"
    block: int
    position: int


def normalise_activations(acts: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max normalise activations to integers 0..9 (rounded); ``lo``/``hi`` default to the array's range.

    A constant array (a feature that never varies) maps to all zeros.
    """
    acts = np.asarray(acts, dtype=np.float64)
    lo = float(acts.min()) if lo is None else lo
    hi = float(acts.max()) if hi is None else hi
    if not hi > lo:
        return np.zeros(acts.shape, dtype=np.int64)
    levels = np.rint((acts - lo) / (hi - lo) * (N_LEVELS - 1))
    return np.clip(levels, 0, N_LEVELS - 1).astype(np.int64)


def _check_block_arrays(tokens_BT: Sequence[Sequence[str]], acts_BT: np.ndarray) -> np.ndarray:
    acts_BT = np.asarray(acts_BT, dtype=np.float64)
    if acts_BT.ndim != 2:
        raise ValueError(f"acts_BT must be [n_blocks, n_tokens], got shape {acts_BT.shape}")
    if len(tokens_BT) != acts_BT.shape[0] or any(len(t) != acts_BT.shape[1] for t in tokens_BT):
        raise ValueError(
            f"tokens_BT ({len(tokens_BT)} blocks) must match acts_BT {acts_BT.shape} block for block, token for token"
        )
    return acts_BT


def select_examples(
    tokens_BT: Sequence[Sequence[str]],
    acts_BT: np.ndarray,
    rng: np.random.Generator,
    n_examples: int = 40,
    n_top: int = 10,
    n_per_bin: int = 2,
    n_random: int = 5,
) -> list[Example]:
    """Choose about ``n_examples`` examples of one feature as in the paper (see the module docstring).

    Returns examples in the order chosen (top first). A feature that never fires gives an empty list.
    """
    acts_BT = _check_block_arrays(tokens_BT, acts_BT)
    n_blocks, n_tokens = acts_BT.shape
    flat = acts_BT.ravel()
    if not flat.max() > 0:
        return []
    levels = normalise_activations(flat, lo=min(0.0, float(flat.min())))
    chosen: list[int] = []
    used: set[int] = set()
    kinds: list[str] = []

    def take(indices: Sequence[int], kind: str) -> None:
        for index in indices:
            if len(chosen) >= n_examples:
                return
            if int(index) not in used:
                used.add(int(index))
                chosen.append(int(index))
                kinds.append(kind)

    # stable sort: ties keep text order, so selection is deterministic
    order = np.argsort(-flat, kind="stable")
    take([i for i in order[:n_top] if flat[i] > 0], "top")
    for level in range(N_LEVELS - 1, 0, -1):
        candidates = np.setdiff1d(np.flatnonzero(levels == level), list(used))
        take(rng.permutation(candidates)[:n_per_bin].tolist(), "bin")
    free = np.setdiff1d(np.arange(flat.size), list(used))
    take(rng.permutation(free)[:n_random].tolist(), "random")

    # the top tokens again, elsewhere: shows whether the token or its context drives the feature
    top_tokens = list(dict.fromkeys(tokens_BT[i // n_tokens][i % n_tokens] for i in chosen[:n_top]))
    flat_tokens = np.array([tok for block in tokens_BT for tok in block], dtype=object)
    occurrences = {
        tok: [int(i) for i in rng.permutation(np.flatnonzero(flat_tokens == tok)) if int(i) not in used]
        for tok in top_tokens
    }
    while len(chosen) < n_examples and any(occurrences.values()):  # each pass removes at least one index
        for tok in top_tokens:
            if occurrences[tok]:
                take([occurrences[tok].pop(0)], "top_token_context")

    examples = []
    for index, kind in zip(chosen, kinds):
        block, position = divmod(index, n_tokens)
        context = tuple(tokens_BT[block][max(0, position - CONTEXT_WINDOW) : position])
        examples.append(Example(tokens_BT[block][position], int(levels[index]), context, kind, block, position))
    return examples


def holdout_blocks(acts_BT: np.ndarray, n_blocks: int, rng: np.random.Generator) -> list[int]:
    """Held-out blocks to simulate: half with the feature's highest activations, half at random.

    Random text alone would be almost all zeros for a sparse feature (and so unscorable); top text alone
    would never test that the explanation predicts *where* the feature is silent.
    """
    acts_BT = np.asarray(acts_BT)
    n_top = min(n_blocks // 2 + n_blocks % 2, len(acts_BT))
    top = [int(b) for b in np.argsort(-acts_BT.max(axis=1), kind="stable")[:n_top]]
    rest = np.setdiff1d(np.arange(len(acts_BT)), top)
    return top + [int(b) for b in rng.permutation(rest)[: n_blocks - n_top]]


def explanation_score(simulated: Sequence[float], true: Sequence[float]) -> float:
    """Pearson correlation of simulated and true activations over all held-out tokens.

    Constant cases (where Pearson's r is undefined): if the *true* activations are constant the feature says
    nothing on this text and the score is NaN (left out of means, counted in tables); if only the
    *simulated* ones are constant, the explanation predicts nothing and scores 0.0, as an uninformative
    explanation should.
    """
    simulated = np.asarray(simulated, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if simulated.shape != true.shape:
        raise ValueError(f"simulated {simulated.shape} and true {true.shape} activations differ in shape")
    if true.size < 2 or np.ptp(true) == 0:
        return float("nan")
    if np.ptp(simulated) == 0:
        return 0.0
    return float(np.corrcoef(simulated, true)[0, 1])


# -------------------------------------------------------------------------------------------------- backends


class Backend(Protocol):
    """What every explainer/simulator offers."""

    name: str
    model: str

    def explain(self, examples: Sequence[Example]) -> str:
        """An explanation that starts with EXPLANATION_PREFIX."""
        ...

    def simulate(self, explanation: str, tokens: Sequence[str]) -> list[int]:
        """A 0..9 activation for each token, predicted from the explanation alone."""
        ...


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


# ---- prompts and parsers shared by the language-model backends

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


# ---- a chat-completion core: cache, OpenAI-compatible client, local HF model

Messages = list[dict[str, str]]


class ChatClient(Protocol):
    """Anything that completes a chat: returns the assistant's reply text."""

    def complete(self, messages: Messages, model: str, temperature: float, max_tokens: int) -> str:
        """The assistant's reply."""
        ...


class ResponseCache:
    """Replies on disk, one JSON file per (backend, model, prompt) key, written atomically.

    One file per reply (rather than one growing JSON file) keeps each write small and atomic and lets
    several processes share the cache.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def key(backend: str, model: str, request: dict[str, Any]) -> str:
        """The cache key of one request."""
        return stable_hash({"backend": backend, "model": model, "request": request}, length=32)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached reply, or None."""
        path = self._path(key)
        return read_json(path)["reply"] if path.is_file() else None

    def put(self, key: str, reply: str, record: dict[str, Any]) -> None:
        """Store a reply with the request it answers (for inspection)."""
        write_json_atomic(self._path(key), {**record, "reply": reply})


class OpenAIChat:
    """An OpenAI-compatible ``/chat/completions`` client using only the standard library.

    ``base_url`` (default ``$OPENAI_BASE_URL`` or https://api.openai.com/v1) includes the ``/v1`` part, as in
    the official client. Retries connection errors, timeouts, HTTP 429 and 5xx with exponential backoff,
    honouring ``Retry-After``; other HTTP errors and malformed replies fail at once with the server's message.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self.api_key:
            raise AutointerpError(
                "autointerp backend 'openai' needs an API key: set OPENAI_API_KEY (any non-empty value for a "
                "local server that needs none), or use backend 'offline' or 'hf'."
            )
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.n_requests = 0  # HTTP requests sent, including retries (tests and cost reports read it)

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to backoff
        return min(self.max_backoff_s, self.backoff_s * 2**attempt)

    def complete(self, messages: Messages, model: str, temperature: float, max_tokens: int) -> str:
        """Send one chat completion request and return the reply text."""
        url = f"{self.base_url}/chat/completions"
        body = json.dumps(
            {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            retry_after = None
            self.n_requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                return self._reply_text(raw, url)
            except urllib.error.HTTPError as err:
                try:
                    detail = err.read()[:500].decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    detail = str(err.reason)
                if err.code != 429 and err.code < 500:
                    raise AutointerpError(f"{url} answered HTTP {err.code}: {detail}") from err
                retry_after = err.headers.get("Retry-After") if err.headers else None
                last_error = f"HTTP {err.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                last_error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if attempt < self.max_retries:
                self.sleep(self._wait(attempt, retry_after))
        raise AutointerpError(f"{url} failed after {self.max_retries + 1} attempts; last error: {last_error}")

    @staticmethod
    def _reply_text(raw: bytes, url: str) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise AutointerpError(f"{url} returned an unparseable reply: {raw[:300]!r}") from err
        if not isinstance(content, str):
            raise AutointerpError(f"{url} returned a reply without text content: {raw[:300]!r}")
        return content


class HFChat:
    """A local instruction-tuned transformers model as a chat client (greedy at temperature 0).

    The model loads on first use. ``generate_fn(messages, max_tokens) -> str`` replaces the model entirely
    (tests, or any other local runtime).
    """

    def __init__(self, model_id: str, device: str | None = None, generate_fn=None):
        self.model_id = model_id
        self.device = device
        self.generate_fn = generate_fn
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_id, dtype=dtype).to(device).eval()
        if self._tokenizer.chat_template is None:
            raise AutointerpError(f"{self.model_id} has no chat template: choose an instruction-tuned model.")

    def complete(self, messages: Messages, model: str, temperature: float, max_tokens: int) -> str:
        """Generate a reply with the local model."""
        if self.generate_fn is not None:
            return self.generate_fn(messages, max_tokens)
        import torch

        with self._lock:
            if self._model is None:
                self._load()
        inputs = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self._model.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            output = self._model.generate(
                **inputs, max_new_tokens=max_tokens, pad_token_id=self._tokenizer.eos_token_id, **sampling
            )
        return self._tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


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

    def _complete(self, messages: Messages, model: str, max_tokens: int) -> str:
        request = {"messages": messages, "temperature": self.temperature, "max_tokens": max_tokens}
        key = ResponseCache.key(self.name, model, request)
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


# ----------------------------------------------------------------------------------------------- protocol


@dataclass
class FeatureInterpretation:
    """The outcome of the protocol for one feature."""

    feature: int
    explanation: str
    score: float  # NaN when unscorable (see explanation_score) or when the backend failed
    n_examples: int
    n_holdout_tokens: int
    backend: str
    model: str
    error: str = ""  # why there is no score, if the backend failed

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for tables."""
        return asdict(self)


def interpret_feature(
    feature: int,
    tokens_BT: Sequence[Sequence[str]],
    acts_BT: np.ndarray,
    holdout_tokens_BT: Sequence[Sequence[str]],
    holdout_acts_BT: np.ndarray,
    backend: Backend,
    n_examples: int = 40,
    n_holdout_blocks: int = 20,
    seed: int = 0,
) -> FeatureInterpretation:
    """Explain one feature from ``tokens_BT``/``acts_BT``, simulate it on held-out blocks and score it.

    Backend errors (an unreachable server, an unparseable reply) are recorded in ``error`` with a NaN score,
    so one bad reply does not lose a whole run; a feature that never fires gets NaN and no explanation.
    """
    acts_BT = _check_block_arrays(tokens_BT, acts_BT)
    holdout_acts_BT = _check_block_arrays(holdout_tokens_BT, holdout_acts_BT)
    rng = np.random.default_rng([seed, feature])
    examples = select_examples(tokens_BT, acts_BT, rng, n_examples=n_examples)
    result = FeatureInterpretation(feature, "", float("nan"), len(examples), 0, backend.name, backend.model)
    if not examples:
        result.error = "the feature never fires on the searched text"
        return result
    chosen = holdout_blocks(holdout_acts_BT, n_holdout_blocks, rng)
    try:
        result.explanation = backend.explain(examples)
        simulated = [v for b in chosen for v in backend.simulate(result.explanation, list(holdout_tokens_BT[b]))]
    except AutointerpError as err:
        result.error = str(err)
        return result
    true = holdout_acts_BT[chosen].ravel()
    if len(simulated) != true.size:
        result.error = f"the simulator returned {len(simulated)} activations for {true.size} tokens"
        return result
    result.n_holdout_tokens = int(true.size)
    result.score = explanation_score(simulated, true)
    return result


def interpret_features(
    features: Sequence[int],
    tokens_BT: Sequence[Sequence[str]],
    acts_FBT: np.ndarray,
    backend: Backend,
    n_examples: int = 40,
    n_holdout_blocks: int = 20,
    seed: int = 0,
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> list[FeatureInterpretation]:
    """Run the protocol for several features on shared text.

    The last ``holdout_fraction`` of the blocks is held out for simulation, the rest searched for examples,
    so no held-out token is ever shown to the explainer.
    """
    from tqdm.auto import tqdm

    acts_FBT = np.asarray(acts_FBT)
    if acts_FBT.ndim != 3 or acts_FBT.shape[0] != len(features):
        raise ValueError(f"acts_FBT must be [n_features={len(features)}, n_blocks, n_tokens], got {acts_FBT.shape}")
    n_search = int(round(len(tokens_BT) * (1 - holdout_fraction)))
    if not 0 < n_search < len(tokens_BT):
        raise ValueError(f"{len(tokens_BT)} blocks cannot be split into search and held-out parts")
    return [
        interpret_feature(
            int(feature),
            tokens_BT[:n_search],
            acts_FBT[i, :n_search],
            tokens_BT[n_search:],
            acts_FBT[i, n_search:],
            backend,
            n_examples=n_examples,
            n_holdout_blocks=n_holdout_blocks,
            seed=seed,
        )
        for i, feature in enumerate(tqdm(features, desc=f"autointerp ({backend.name})", leave=False))
    ]


def summarise_scores(scores: Sequence[float]) -> dict[str, float]:
    """Mean, median and counts of scores (NaN scores counted, not averaged)."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = scores[np.isfinite(scores)]
    return {
        "n": int(scores.size),
        "n_scored": int(valid.size),
        "mean": float(valid.mean()) if valid.size else float("nan"),
        "median": float(np.median(valid)) if valid.size else float("nan"),
    }


# ------------------------------------------------------------------------------------- wiring to the SAEs

GROUPS = ("lua", "luastories_persisting")  # Figure 6's two histograms
GROUP_LABELS = {"lua": "Lua features", "luastories_persisting": "Persisting Lua features in LuaStories"}
ENCODE_CHUNK_BLOCKS = 128  # blocks encoded at a time: bounds memory at chunk x context x d_sae floats


def token_strings(cfg) -> list[str]:
    """The text of every token id of the run's tokenizer (decoded one by one, so ' =' keeps its space)."""
    from paper_lib.data import get_tokenizer

    tokenizer = get_tokenizer(cfg)
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def lua_text_blocks(cfg):
    """The Lua validation blocks (``cfg.autointerp.n_blocks`` of ``cfg.sae.context_size`` tokens) features are
    explained and simulated on: ``[n_blocks, context]`` token ids."""
    from paper_lib.data import domain_blocks

    context = cfg.sae.context_size
    return domain_blocks(cfg, "lua", "validation", cfg.autointerp.n_blocks * context, block_size=context)


def _encode_chunks(cfg, model_name: str, blocks):
    from paper_lib.saes import encode_blocks, load_sae
    from paper_lib.training import load_hooked_lm

    model, sae = load_hooked_lm(cfg, model_name), load_sae(cfg, model_name)  # once, not per chunk
    for start in range(0, len(blocks), ENCODE_CHUNK_BLOCKS):
        acts = encode_blocks(cfg, model_name, blocks[start : start + ENCODE_CHUNK_BLOCKS], model=model, sae=sae)
        yield np.asarray(acts.detach().float().cpu().numpy(), dtype=np.float32)


def max_activations(cfg, model_name: str, blocks) -> np.ndarray:
    """Each SAE feature's largest activation on ``blocks``: ``[d_sae]`` (0 for features dead on this text)."""
    return np.max(np.stack([chunk.max(axis=(0, 1)) for chunk in _encode_chunks(cfg, model_name, blocks)]), axis=0)


def feature_activations(cfg, model_name: str, blocks, features: Sequence[int]) -> np.ndarray:
    """Activations of the chosen SAE features on ``blocks``: ``[n_features, n_blocks, context]``."""
    features = np.asarray(features, dtype=np.int64)
    chunks = [chunk[:, :, features] for chunk in _encode_chunks(cfg, model_name, blocks)]
    return np.concatenate(chunks).transpose(2, 0, 1)


def _sample(features: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    return sorted(int(f) for f in rng.permutation(features)[:n])


def _step_inputs(cfg, backend: Backend) -> dict[str, Any]:
    from paper_lib.data import tokenizer_hash

    sections = cfg.to_dict()
    sections.pop("case_studies", None)  # everything else decides the models, SAEs, matches or prompts
    return {"config": sections, "tokenizer": tokenizer_hash(cfg), "backend": backend.name, "model": backend.model}


def score_features(cfg, backend: Backend | None = None) -> "pd.DataFrame":  # noqa: F821
    """Figure 6's scores: one row per feature, for two groups of ``cfg.autointerp.n_features`` features each.

    ``lua``: a seeded sample of the Lua SAE's features that fire on the Lua text. ``luastories_persisting``:
    a sample of LuaStories' persisting Lua features (``matching.match_pair(cfg, "lua", "luastories",
    cfg.autointerp.matching_mode).persisting``) that fire on it, with their Lua parent and correlation.
    Both are explained and simulated on Lua validation text. Cached as a step; LLM replies are cached too.
    """
    import pandas as pd

    from paper_lib.artifacts import cached_step
    from paper_lib.matching import match_pair

    backend = backend or make_backend(cfg)
    ai_cfg = cfg.autointerp

    def build(out_dir: Path) -> dict[str, Any]:
        blocks = lua_text_blocks(cfg)
        vocab = token_strings(cfg)
        tokens_BT = [[vocab[int(i)] for i in block] for block in blocks]
        n_search = int(round(len(blocks) * (1 - HOLDOUT_FRACTION)))
        match = match_pair(cfg, "lua", "luastories", mode=ai_cfg.matching_mode)
        persisting = np.asarray(sorted(int(f) for f in match.persisting), dtype=np.int64)
        rng = np.random.default_rng(cfg.seed)
        groups = {
            "lua": ("lua", np.flatnonzero(max_activations(cfg, "lua", blocks[:n_search]) > 0)),
            "luastories_persisting": (
                "luastories",
                persisting[max_activations(cfg, "luastories", blocks[:n_search])[persisting] > 0]
                if persisting.size
                else persisting,
            ),
        }
        rows = []
        for group, (model_name, candidates) in groups.items():
            features = _sample(candidates, ai_cfg.n_features, rng)
            if not features:
                continue
            acts_FBT = feature_activations(cfg, model_name, blocks, features)
            results = interpret_features(
                features, tokens_BT, acts_FBT, backend, ai_cfg.n_examples, ai_cfg.n_holdout_blocks, cfg.seed
            )
            for result in results:
                row = {"group": group, "sae": model_name, **result.to_dict()}
                if group == "luastories_persisting":
                    row["lua_parent"] = int(np.asarray(match.best_parent_for_child)[result.feature])
                    row["parent_corr"] = float(np.asarray(match.best_corr_for_child)[result.feature])
                rows.append(row)
        write_json_atomic(out_dir / "scores.json", rows)  # NaN scores round-trip through Python's json
        return {
            "n_blocks": len(blocks),
            "n_candidates": {g: int(len(c)) for g, (_, c) in groups.items()},
            "backend": backend.name,
            "model": backend.model,
        }

    path = cached_step(cfg.profile, "autointerp", _step_inputs(cfg, backend), build, version=1)
    return pd.DataFrame(read_json(path / "scores.json"))


def score_summary(table) -> "pd.DataFrame":  # noqa: F821
    """Mean and median score per group (with counts, backend and model), from ``score_features``'s table."""
    import pandas as pd

    rows = []
    for group in GROUPS:
        part = table[table["group"] == group] if len(table) else table
        rows.append(
            {
                "group": group,
                "label": GROUP_LABELS[group],
                **summarise_scores(part["score"].to_numpy(dtype=float) if len(part) else []),
                "backend": ", ".join(sorted(set(part["backend"]))) if len(part) else "",
                "model": ", ".join(sorted(set(part["model"]))) if len(part) else "",
            }
        )
    return pd.DataFrame(rows)
