"""Automated interpretability: the protocol on constructed activations, every backend's request/parse path,
an OpenAI-compatible fake server on localhost (retries, errors, cache)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from paper_lib import autointerp as ai
from paper_lib.core.config import load_config

VOCAB = ["local", " x", " y", " =", " 1", " 2", "\n", "end", "(", ")", " +", " if", " then", "'", " ==", " f"]


def _text(rng, n_blocks=300, n_tokens=24):
    return [list(rng.choice(VOCAB, size=n_tokens)) for _ in range(n_blocks)]


def _equals_feature(tokens_BT, rng):
    """Fires on ' =' (with some spread), silent elsewhere."""
    fires = np.array([[tok == " =" for tok in block] for block in tokens_BT])
    return fires * rng.uniform(2.0, 4.0, size=fires.shape)


def _random_feature(tokens_BT, rng):
    """Sparse activations unrelated to the text."""
    shape = (len(tokens_BT), len(tokens_BT[0]))
    return (rng.random(shape) < 0.05) * rng.uniform(0.5, 4.0, size=shape)


# ---------------------------------------------------------------------------------------------------- core


def test_normalise_activations_maps_range_to_0_9():
    levels = ai.normalise_activations(np.array([0.0, 0.5, 1.0, 2.0]))
    assert levels.tolist() == [0, 2, 4, 9]
    assert ai.normalise_activations(np.full(5, 3.0)).tolist() == [0] * 5


def test_select_examples_follows_the_protocol():
    rng = np.random.default_rng(0)
    tokens = _text(rng)
    acts = _equals_feature(tokens, rng)
    examples = ai.select_examples(tokens, acts, np.random.default_rng(1), n_examples=40)
    kinds = [ex.kind for ex in examples]
    assert len(examples) == 40
    assert kinds[:10] == ["top"] * 10
    assert kinds.count("random") == 5
    assert "top_token_context" in kinds
    # the top examples are the ten highest activations, normalised so the highest is 9
    top_acts = sorted(acts.ravel())[-10:]
    assert examples[0].activation == 9 and all(ex.token == " =" for ex in examples[:10])
    assert {round(acts[ex.block, ex.position], 9) for ex in examples[:10]} == {round(a, 9) for a in top_acts}
    # at most two per other non-zero bin; no position twice; context is the text just before
    bins = [ex.activation for ex in examples if ex.kind == "bin"]
    assert all(bins.count(b) <= 2 for b in set(bins)) and bins
    assert len({(ex.block, ex.position) for ex in examples}) == len(examples)
    ex = examples[3]
    assert ex.context == tuple(tokens[ex.block][max(0, ex.position - ai.CONTEXT_WINDOW) : ex.position])
    assert ai.select_examples(tokens, np.zeros_like(acts), np.random.default_rng(0)) == []


def test_explanation_score_constant_cases():
    assert ai.explanation_score([0, 1, 2], [0.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert ai.explanation_score([2, 1, 0], [0.0, 1.0, 2.0]) == pytest.approx(-1.0)
    assert ai.explanation_score([0, 0, 0], [0.0, 1.0, 2.0]) == 0.0  # explanation predicts nothing
    assert np.isnan(ai.explanation_score([0, 1, 2], [1.0, 1.0, 1.0]))  # feature silent: unscorable
    summary = ai.summarise_scores([0.5, float("nan"), 0.7, 0.0])
    assert summary["n"] == 4 and summary["n_scored"] == 3
    assert summary["mean"] == pytest.approx(0.4) and summary["median"] == pytest.approx(0.5)


def test_offline_explanation_round_trips_through_text():
    backend = ai.OfflineBackend()
    examples = [ai.Example(" =", 9, (" x",), "top", 0, 1), ai.Example('"\n', 4, ("local",), "bin", 0, 2)]
    explanation = backend.explain(examples)
    assert explanation.startswith(ai.EXPLANATION_PREFIX)
    tokens, contexts = backend.parse_explanation(explanation)
    assert tokens == {" =": 9, '"\n': 4} and contexts == {}
    assert backend.simulate(explanation, [" x", " =", '"\n']) == [0, 9, 4]


def test_offline_protocol_scores_equals_feature_high_and_random_feature_low():
    rng = np.random.default_rng(0)
    tokens = _text(rng)
    acts = np.stack([_equals_feature(tokens, rng), _random_feature(tokens, rng)])
    results = ai.interpret_features([7, 8], tokens, acts, ai.OfflineBackend(), n_examples=40, n_holdout_blocks=20)
    equals, random_feature = results
    assert equals.feature == 7 and equals.backend == "offline"
    assert '" ="' in equals.explanation, equals.explanation
    assert equals.n_examples == 40 and equals.n_holdout_tokens == 20 * 24
    assert equals.score > 0.9, equals
    assert abs(random_feature.score) < 0.3, random_feature
    # deterministic given the seed
    again = ai.interpret_features([7, 8], tokens, acts, ai.OfflineBackend(), n_examples=40, n_holdout_blocks=20)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results]


def test_interpret_feature_that_never_fires_is_nan_with_reason():
    rng = np.random.default_rng(0)
    tokens = _text(rng, n_blocks=20)
    zeros = np.zeros((20, 24))
    result = ai.interpret_feature(0, tokens[:16], zeros[:16], tokens[16:], zeros[16:], ai.OfflineBackend())
    assert np.isnan(result.score) and "never fires" in result.error


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="tokens_BT"):
        ai.select_examples([["a", "b"]], np.zeros((1, 3)), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------- prompts/parsers


def test_parse_simulation_and_explanation():
    assert ai.parse_simulation("Sure! [0, 3, 12, -1]", 4) == [0, 3, 9, 0]
    assert ai.parse_simulation("[1, 2]\nfinal: [0, 0, 9]", 3) == [0, 0, 9]
    with pytest.raises(ai.AutointerpError, match="JSON list of 3"):
        ai.parse_simulation("[1, 2]", 3)
    assert ai.parse_explanation("the token ' ='.") == "This feature looks mainly for the token ' ='."
    assert (
        ai.parse_explanation('Here it is:\n"This feature looks mainly for assignments."')
        == "This feature looks mainly for assignments."
    )
    with pytest.raises(ai.AutointerpError, match="empty"):
        ai.parse_explanation("  \n ")
    messages = ai.simulate_messages("This feature looks mainly for x.", ["a", ' "b"'])
    assert '2. " \\"b\\""' in messages[1]["content"] and "exactly 2 integers" in messages[1]["content"]


def _fake_llm_reply(messages):
    """A perfect explainer/simulator for the ' =' feature, answering the module's own prompts."""
    if messages[0]["content"] == ai.EXPLAIN_SYSTEM:
        return 'This feature looks mainly for the token " =".'
    tokens = [json.loads(q) for q in re.findall(r'^\d+\. (".*")$', messages[1]["content"], flags=re.M)]
    return "Activations: " + json.dumps([9 if tok == " =" else 0 for tok in tokens])


def test_hf_backend_prompt_and_parse_path_with_injected_generate():
    calls = []

    def generate(messages, max_tokens):
        calls.append((messages, max_tokens))
        return _fake_llm_reply(messages)

    backend = ai.ChatBackend("hf", ai.HFChat("tiny/fake", generate_fn=generate), "tiny/fake", "tiny/fake")
    rng = np.random.default_rng(0)
    tokens = _text(rng, n_blocks=60)
    acts = _equals_feature(tokens, rng)
    result = ai.interpret_feature(3, tokens[:48], acts[:48], tokens[48:], acts[48:], backend, n_holdout_blocks=4)
    assert result.explanation == 'This feature looks mainly for the token " =".'
    assert result.score > 0.9 and result.backend == "hf" and result.model == "tiny/fake"
    assert len(calls) == 1 + 4  # one explanation, one simulation per held-out block


# --------------------------------------------------------------------------------- OpenAI-compatible server


class FakeServer:
    """An OpenAI-compatible /v1/chat/completions endpoint on 127.0.0.1 with scripted failures."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, bytes] | float] = []  # consumed first; a float = delay then answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold a handler thread forever

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "at": time.monotonic(), **body}
                )
                if self.path != "/v1/chat/completions":
                    return self._send(404, {}, b'{"error": "not found"}')
                if server.script:
                    item = server.script.pop(0)
                    if isinstance(item, float):
                        time.sleep(item)
                    else:
                        return self._send(*item)
                reply = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": _fake_llm_reply(body["messages"])},
                            "finish_reason": "stop",
                        }
                    ],
                }
                self._send(200, {}, json.dumps(reply).encode())

            def _send(self, status, headers, payload):
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def _client(server, **kwargs):
    options = {"timeout_s": 5.0, "max_retries": 2, **kwargs}
    return ai.OpenAIChat(base_url=server.base_url, api_key="test-key", **options)


def _reply(text: str) -> bytes:
    """A chat-completion response body whose reply is ``text``."""
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


MESSAGES = [{"role": "system", "content": ai.EXPLAIN_SYSTEM}, {"role": "user", "content": "examples"}]


def test_openai_request_format(server):
    reply = _client(server).complete(MESSAGES, "gpt-4-turbo", 0.0, 80)
    assert reply == 'This feature looks mainly for the token " =".'
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer test-key"
    assert request["model"] == "gpt-4-turbo" and request["temperature"] == 0.0 and request["max_tokens"] == 80
    assert request["messages"] == MESSAGES


def test_openai_retries_429_with_retry_after_then_500_with_backoff(server):
    server.script = [(429, {"Retry-After": "1.5"}, b'{"error": "rate limited"}'), (500, {}, b'{"error": "boom"}')]
    assert _client(server).complete(MESSAGES, "m", 0.0, 80).startswith(ai.EXPLANATION_PREFIX)
    assert len(server.requests) == 3
    first, second, third = (r["at"] for r in server.requests)
    assert second - first >= 1.5  # Retry-After honoured (the SDK's own backoff would wait at most 0.5 s)
    assert third - second >= 0.3  # then exponential backoff with jitter, not an immediate retry


def test_openai_gives_up_after_retries_and_fails_fast_on_client_errors(server):
    server.script = [(503, {}, b'{"error": "down"}')] * 3
    with pytest.raises(ai.AutointerpError, match=r"after 3 attempts.*HTTP 503"):
        _client(server).complete(MESSAGES, "m", 0.0, 80)
    assert len(server.requests) == 3
    server.script = [(401, {}, b'{"error": "bad key"}')]
    with pytest.raises(ai.AutointerpError, match=r"HTTP 401.*bad key"):
        _client(server).complete(MESSAGES, "m", 0.0, 80)
    assert len(server.requests) == 4  # no retry on 401
    server.script = [(200, {}, b"not json")]
    with pytest.raises(ai.AutointerpError, match="unparseable"):
        _client(server).complete(MESSAGES, "m", 0.0, 80)


def test_openai_timeout_is_retried(server):
    server.script = [1.0]  # the first answer comes after the client's timeout
    assert _client(server, timeout_s=0.3, max_retries=1).complete(MESSAGES, "m", 0.0, 80).startswith(
        ai.EXPLANATION_PREFIX
    )
    assert len(server.requests) == 2


def test_openai_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ai.AutointerpError, match="OPENAI_API_KEY"):
        ai.OpenAIChat(base_url="http://127.0.0.1:9/v1")


def test_openai_backend_full_protocol_and_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("AUTOINTERP_MODEL", "local-model")
    cfg = load_config("smoke", {"autointerp.backend": "openai", "autointerp.max_retries": 1})
    rng = np.random.default_rng(0)
    tokens = _text(rng, n_blocks=60)
    acts = _equals_feature(tokens, rng)

    def run():
        backend = ai.make_backend(cfg, cache_dir=tmp_path / "cache")
        return ai.interpret_feature(5, tokens[:48], acts[:48], tokens[48:], acts[48:], backend, n_holdout_blocks=4)

    first = run()
    assert first.backend == "openai" and first.model == "local-model" and not first.error
    assert first.score > 0.9
    assert len(server.requests) == 5 and {r["model"] for r in server.requests} == {"local-model"}
    assert all(r["temperature"] == cfg.autointerp.temperature for r in server.requests)
    second = run()
    assert len(server.requests) == 5  # every reply came from the cache
    assert second.to_dict() == first.to_dict()
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 5


def test_unparseable_reply_is_recorded_not_raised(server, tmp_path):
    server.script = [(200, {}, _reply("not an explanation at all"))] + [(200, {}, _reply("no list here"))] * 2
    backend = ai.ChatBackend("openai", _client(server, max_retries=1), "m", "m", cache=ai.ResponseCache(tmp_path))
    rng = np.random.default_rng(0)
    tokens = _text(rng, n_blocks=20)
    acts = _equals_feature(tokens, rng)
    result = ai.interpret_feature(1, tokens[:16], acts[:16], tokens[16:], acts[16:], backend, n_holdout_blocks=2)
    assert np.isnan(result.score) and "no JSON list" in result.error  # one feature lost, the run goes on


def test_backend_failure_stops_the_run_and_caches_nothing(server, tmp_path):
    server.script = [(500, {}, b"{}")] * 2
    backend = ai.ChatBackend("openai", _client(server, max_retries=1), "m", "m", cache=ai.ResponseCache(tmp_path))
    rng = np.random.default_rng(0)
    tokens = _text(rng, n_blocks=20)
    acts = _equals_feature(tokens, rng)
    with pytest.raises(ai.BackendUnavailable, match="HTTP 500.*Nothing was cached"):
        ai.interpret_feature(1, tokens[:16], acts[:16], tokens[16:], acts[16:], backend, n_holdout_blocks=2)
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached


def test_server_down_names_the_refused_connection(tmp_path):
    import socket

    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chat = ai.OpenAIChat(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=1)
    backend = ai.ChatBackend("openai", chat, "m", "m", cache=ai.ResponseCache(tmp_path))
    with pytest.raises(ai.BackendUnavailable, match="Connection refused.*Is the server running"):
        backend.explain([ai.Example("x", 9, ("a",), "top", 0, 0)])


def test_reply_cache_keeps_servers_and_models_apart(server, tmp_path):
    cache = ai.ResponseCache(tmp_path)
    server.script = [(200, {}, _reply(f"{ai.EXPLANATION_PREFIX} one."))]
    first = ai.ChatBackend("openai", _client(server), "m", "m", cache=cache)
    assert first.explain([ai.Example("x", 9, ("a",), "top", 0, 0)]).endswith("one.")
    other_server = ai.ChatBackend("openai", _client(server), "m", "m", cache=cache)
    other_server.chat.base_url = other_server.chat.base_url.replace("127.0.0.1", "localhost")
    server.script = [(200, {}, _reply(f"{ai.EXPLANATION_PREFIX} two."))]
    assert other_server.explain([ai.Example("x", 9, ("a",), "top", 0, 0)]).endswith("two.")
    server.script = [(200, {}, _reply(f"{ai.EXPLANATION_PREFIX} three."))]
    other_model = ai.ChatBackend("openai", _client(server), "m2", "m2", cache=cache)
    assert other_model.explain([ai.Example("x", 9, ("a",), "top", 0, 0)]).endswith("three.")
    assert first.explain([ai.Example("x", 9, ("a",), "top", 0, 0)]).endswith("one.")  # served from the cache
    assert len(server.requests) == 3


# ------------------------------------------------------------------------------------- wiring (fake SAEs)


def test_score_features_wires_saes_and_matching(smoke_cfg, monkeypatch):
    """score_features on fake SAEs: feature k fires on token id k; LuaStories persists features 3 and 5."""
    import types

    import torch

    from paper_lib.autointerp import run

    d_sae, vocab = 12, [f"t{i}" for i in range(10)]
    context = smoke_cfg.sae.context_size
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, len(vocab), (50, context), generator=generator)
    encoded = []

    def encode_chunks(cfg, name, blocks_BT, chunk_blocks=64, model=None, sae=None):
        for start in range(0, len(blocks_BT), chunk_blocks):  # one model and SAE load per call, as the real one
            chunk = blocks_BT[start : start + chunk_blocks]
            encoded.append((name, len(chunk)))
            acts = torch.zeros(len(chunk), chunk.shape[1], d_sae)
            acts.scatter_(2, chunk.unsqueeze(-1), 1.0 + chunk.unsqueeze(-1).float() / 10)
            yield acts.numpy()  # features 10 and 11 never fire

    class Match:
        mode, threshold, extra = "position", 0.8, {"folder": "matching-lua-luastories-fake"}
        persisting = [5, 3, 11]
        best_parent_for_child = np.arange(d_sae) + 100
        best_corr_for_child = np.linspace(0, 1, d_sae)

    monkeypatch.setattr(run, "encode_chunks", encode_chunks)
    monkeypatch.setattr(run, "sae_dir", lambda cfg, name: types.SimpleNamespace(name=f"sae-{name}-fake"))
    monkeypatch.setattr(run, "match_pair", lambda *a, **k: Match())
    monkeypatch.setattr(run, "autointerp_blocks", lambda cfg: blocks)
    monkeypatch.setattr(run, "token_strings", lambda cfg: vocab)
    cfg = load_config("smoke", {"autointerp.n_features": 4, "autointerp.n_holdout_blocks": 4})
    table = ai.score_features(cfg)
    lua = table[table.group == "lua"]
    persisting = table[table.group == "luastories_persisting"]
    assert len(lua) == 4 and set(lua.feature) <= set(range(10))  # only features that fire are sampled
    assert sorted(persisting.feature) == [3, 5]  # feature 11 persists but never fires on Lua text
    assert persisting.set_index("feature").loc[5, "lua_parent"] == 105
    assert (table.score > 0.99).all(), table  # a one-token feature is explained perfectly offline
    assert (table.backend == "offline").all()
    summary = ai.score_summary(table)
    assert summary.set_index("group").loc["luastories_persisting", "n_scored"] == 2
    n_calls = len(encoded)
    assert ai.score_features(cfg).equals(table) and len(encoded) == n_calls  # cached step: no re-encoding


def test_hf_chat_generates_with_a_tiny_local_model(tmp_path):
    """The real HFChat load/chat-template/generate/decode path, on a tiny random model saved to disk."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(["local x = 1\nThis feature looks mainly for tokens"] * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
    )
    MistralForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    chat = ai.HFChat(str(tmp_path), device="cpu")
    reply = chat.complete(ai.explain_messages([ai.Example(" =", 9, ("x",), "top", 0, 1)]), str(tmp_path), 0.0, 6)
    assert isinstance(reply, str) and reply == chat.complete(
        ai.explain_messages([ai.Example(" =", 9, ("x",), "top", 0, 1)]), str(tmp_path), 0.0, 6
    )  # greedy at temperature 0: deterministic
    with pytest.raises(ai.AutointerpError, match="JSON list"):  # a random model cannot answer: clear error
        ai.ChatBackend("hf", chat, "m", "m").simulate("This feature looks mainly for x.", ["a", "b"])
