"""Chat-completion clients: an OpenAI-compatible server (the ``openai`` SDK), a local HF model, a reply cache."""

from __future__ import annotations

import os
import threading
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
    """An OpenAI-compatible ``/chat/completions`` client on the official ``openai`` SDK.

    ``base_url`` (default ``$OPENAI_BASE_URL`` or https://api.openai.com/v1) includes the ``/v1`` part. Retries,
    exponential backoff with jitter, ``Retry-After`` and timeouts are the SDK's (it retries connection errors,
    timeouts, HTTP 408, 409, 429 and 5xx ``max_retries`` times); this class maps what is left into the project's
    errors: a key, permission or model-name refusal and an exhausted retry budget stop the run
    (``BackendUnavailable``), other refusals and malformed replies fail the one request (``AutointerpError``).
    It replaced a hand-written urllib client with its own retry loop.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
    ):
        import openai

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise AutointerpError(
                "autointerp backend 'openai' needs an API key: set OPENAI_API_KEY (any non-empty value for a "
                "local server that needs none), or use backend 'offline' or 'hf'."
            )
        self.max_retries = max_retries
        self._openai = openai
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def complete(self, messages: Messages, model: str, temperature: float, max_tokens: int) -> str:
        """Send one chat completion request (retried by the SDK) and return the reply text."""
        openai = self._openai
        url = f"{self.base_url}/chat/completions"
        try:
            completion = self.client.chat.completions.create(
                model=model, messages=messages, temperature=temperature, max_tokens=max_tokens
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
            raise BackendUnavailable(  # key, permission or model name: no request can succeed
                f"{url} answered HTTP {err.status_code}: {_detail(err)}. Check OPENAI_API_KEY, OPENAI_BASE_URL and "
                "the model name (AUTOINTERP_MODEL or autointerp.explainer_model)."
            ) from err
        except openai.APIStatusError as err:
            if err.status_code in (408, 409, 429) or err.status_code >= 500:  # retried by the SDK, still failing
                raise BackendUnavailable(
                    f"{url} failed after {self.max_retries + 1} attempts; last error: HTTP {err.status_code}: "
                    f"{_detail(err)}. Is the server running and OPENAI_BASE_URL right? Nothing was cached: rerun "
                    "when it answers."
                ) from err
            raise AutointerpError(f"{url} answered HTTP {err.status_code}: {_detail(err)}") from err
        except openai.APIConnectionError as err:  # refused, reset, DNS, or timed out (APITimeoutError)
            cause = err.__cause__ or err
            raise BackendUnavailable(
                f"{url} failed after {self.max_retries + 1} attempts; last error: {type(err).__name__}: {cause}. Is "
                "the server running and OPENAI_BASE_URL right? Nothing was cached: rerun when it answers."
            ) from err
        except ValueError as err:  # a body that is not JSON
            raise AutointerpError(f"{url} returned an unparseable reply: {err}") from err
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError) as err:
            raise AutointerpError(f"{url} returned an unparseable reply: {completion!r:.300}") from err
        if not isinstance(content, str):
            raise AutointerpError(f"{url} returned a reply without text content: {completion!r:.300}")
        return content


def _detail(err) -> str:
    """The first 500 characters of an error reply's body."""
    try:
        body = err.response.text
    except Exception:  # noqa: BLE001 - a streamed or closed response: fall back to the SDK's message
        body = str(err)
    return body[:500]


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
