"""Chat-completion clients: an OpenAI-compatible HTTP client (standard library), a local HF model, a reply cache."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..core.artifacts import read_json, stable_hash, write_json_atomic
from .protocol import AutointerpError, BackendUnavailable


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
                if err.code in (401, 403, 404):  # key, permission or model name: no request can succeed
                    raise BackendUnavailable(
                        f"{url} answered HTTP {err.code}: {detail}. Check OPENAI_API_KEY, OPENAI_BASE_URL and the "
                        "model name (AUTOINTERP_MODEL or autointerp.explainer_model)."
                    ) from err
                if err.code != 429 and err.code < 500:
                    raise AutointerpError(f"{url} answered HTTP {err.code}: {detail}") from err
                retry_after = err.headers.get("Retry-After") if err.headers else None
                last_error = f"HTTP {err.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                last_error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if attempt < self.max_retries:
                self.sleep(self._wait(attempt, retry_after))
        raise BackendUnavailable(
            f"{url} failed after {self.max_retries + 1} attempts; last error: {last_error}. Is the server running "
            "and OPENAI_BASE_URL right? Nothing was cached: rerun when it answers."
        )

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
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_id)
            model = AutoModelForCausalLM.from_pretrained(self.model_id, dtype=dtype).to(device).eval()
        except Exception as err:  # transformers raises OSError, ValueError, ... for a model it cannot load
            raise BackendUnavailable(
                f"cannot load the autointerp model {self.model_id} ({err}); set autointerp.hf_model to a local "
                "folder or a hub id that is reachable (HF_TOKEN), or use backend 'offline'."
            ) from err
        if tokenizer.chat_template is None:
            raise BackendUnavailable(f"{self.model_id} has no chat template: choose an instruction-tuned model.")
        self._tokenizer, self._model = tokenizer, model

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
