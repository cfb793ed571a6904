"""The paper profile's hub path without a network: its dataset table, the errors an unreachable or refusing hub
gives, and token strings of a sentencepiece-style (hub) tokenizer, which keep a word's leading space."""

import json
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from paper_lib import data
from paper_lib.core.config import DOMAINS, load_config
from paper_lib.data import corpora, hub, vocab

OFFLINE_FIX = ("data.source: local", "PAPER_DATA_DIR", "data.tokenizer: bpe")


def _gated(message="Access to model is restricted."):
    return GatedRepoError(message, response=SimpleNamespace(headers={}, request=None, status_code=401))


def _missing(message="Repository Not Found for url: https://huggingface.co/api/datasets/nilq/no-such-set."):
    """What the hub answers for a wrong id when no token is sent: not found, with status 401 (not 404)."""
    return RepositoryNotFoundError(message, response=SimpleNamespace(headers={}, request=None, status_code=401))


def _raise_from(outer, inner):
    """``outer`` raised from ``inner``, as the libraries chain them."""
    try:
        raise inner
    except BaseException as err:
        outer.__cause__ = err
        return outer


def test_hub_table_covers_every_domain_and_split():
    assert set(corpora.HUB_SOURCES) == set(DOMAINS)
    for source in corpora.HUB_SOURCES.values():
        owner, _, name = source.dataset.partition("/")
        assert owner and name and "/" not in name, source.dataset
        assert isinstance(source.text_key, str) and source.text_key
        assert set(source.splits) == set(data.SPLITS) and all(source.splits.values())


def test_offline_hub_dataset_names_the_id_and_the_fix(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are read when the libraries are imported: set both the variables and
    # the constants they were read into, so the real load_dataset refuses to go online.
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = load_config("smoke", {"data.source": "hub"})
    source = corpora.HUB_SOURCES["tinystories"]
    with pytest.raises(data.DataError) as info:
        data.load_texts(cfg, "tinystories", "validation")
    message = str(info.value)
    assert source.dataset in message and "hub unreachable" in message and "HF_HUB_OFFLINE" in message
    assert all(fix in message for fix in OFFLINE_FIX)


@pytest.mark.parametrize(
    "error, expected",
    [
        (ConnectionError("Couldn't reach the dataset on the Hub (LocalEntryNotFoundError)"), "hub unreachable"),
        (_gated(), "access denied / gated"),
        (_missing(), "not found, or private/gated and no token"),
    ],
)
def test_hub_dataset_failure_says_which(monkeypatch, error, expected):
    import datasets

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", fail)
    for variable in hub._OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    cfg = load_config("smoke", {"data.source": "hub"})
    with pytest.raises(data.DataError) as info:
        data.load_texts(cfg, "lua", "train")
    message = str(info.value)
    assert corpora.HUB_SOURCES["lua"].dataset in message and expected in message
    assert all(fix in message for fix in OFFLINE_FIX)
    if expected.startswith("access denied"):
        assert "HF_TOKEN" in message and f"huggingface.co/datasets/{corpora.HUB_SOURCES['lua'].dataset}" in message


@pytest.mark.parametrize(
    "cause, expected",
    [
        # What transformers raises with no network or in offline mode, and for a gated repo without access.
        (_raise_from(OSError("We couldn't connect to 'https://huggingface.co'"), _raise_from(
            LocalEntryNotFoundError("not in the cache"), OSError("[Errno -2] Name or service not known"))),
         "hub unreachable"),
        (_raise_from(OSError("You are trying to access a gated repo."), _gated()), "access denied / gated"),
    ],
)
def test_hub_tokenizer_failure_says_which(monkeypatch, tmp_path, cause, expected):
    import transformers

    def fail(*args, **kwargs):
        raise cause

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    for variable in hub._OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    cfg = load_config("smoke", {"data.tokenizer": "hub"})
    with pytest.raises(data.DataError) as info:
        data.tokenizer_dir(cfg)
    message = str(info.value)
    assert f"tokenizer {cfg.data.hub_tokenizer}" in message and expected in message
    assert all(fix in message for fix in OFFLINE_FIX)
    if expected.startswith("access denied"):
        assert "HF_TOKEN" in message and f"https://huggingface.co/{cfg.data.hub_tokenizer}" in message


# --- token strings -------------------------------------------------------------------------------------------

SENTENCES = [
    f"{who} {verb} the {what} {where}."
    for who in ("the cat", "a dog", "my friend", "the old man", "she", "he")
    for verb in ("saw", "liked", "found", "took")
    for what in ("ball", "book", "red hat", "small box", "apple")
    for where in ("in the garden", "on the table", "at home")
] + [f"def f{i}(x):\n    if x > {i}:\n        raise ValueError(x)\n    return x\n" for i in range(40)]


SPECIALS = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]


def _sentencepiece_tokenizer(layout: str):
    """A small BPE laid out like Mistral's: ids 0-2 special, then 256 byte-fallback pieces (no piece holds a
    newline, so "\n" is <0x0A>), then pieces with "▁" for spaces; the decoder turns "▁" into a space and strips
    the first one. "metaspace": a Metaspace pre-tokenizer (prepend to the first word); "prepend": a "▁"-prepending
    normalizer and no pre-tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trained.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False))
    model = json.loads(trained.to_str())["model"]
    pieces = [p for p, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if p not in SPECIALS and "\n" not in p]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    merges = [m for m in merges if "\n" not in "".join(m)]
    ids = {p: i for i, p in enumerate([*SPECIALS, *BYTES, *pieces])}
    tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token="<unk>", byte_fallback=True))
    if layout == "metaspace":
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_byte_level_bpe_strings_are_unchanged(smoke_cfg):
    """The project's byte-level BPE keeps exactly the strings ``decode([id])`` gave, so cached results stand."""
    tokenizer = data.get_tokenizer(smoke_cfg)
    assert vocab.vocab_strings(tokenizer) == [tokenizer.decode([i]) for i in range(len(tokenizer))]
    assert data.token_strings(smoke_cfg) == [tokenizer.decode([i]) for i in range(len(tokenizer))]


@pytest.mark.parametrize("layout", ["metaspace", "prepend"])
def test_sentencepiece_strings_keep_the_leading_space(layout):
    tokenizer = _sentencepiece_tokenizer(layout)
    strings = vocab.vocab_strings(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    word_initial = [i for i, piece in enumerate(pieces) if piece.startswith("▁") and piece.strip("▁")]
    assert word_initial and tokenizer.decode([tokenizer.convert_tokens_to_ids("▁the")]) == "the"
    assert strings[tokenizer.convert_tokens_to_ids("▁the")] == " the"
    assert all(strings[i] == " " + tokenizer.decode([i]).lstrip(" ") for i in word_initial)
    # Byte-fallback pieces read as their byte (a partial UTF-8 byte as decoding shows it); specials as themselves.
    assert strings[tokenizer.convert_tokens_to_ids("<0x0A>")] == "\n"
    assert strings[tokenizer.convert_tokens_to_ids("<0xC3>")] == tokenizer.decode([tokenizer.convert_tokens_to_ids("<0xC3>")])
    assert strings[tokenizer.eos_token_id] == "</s>"


def test_snippet_tokens_and_labels_keep_word_boundaries(monkeypatch):
    """A case-study snippet's token strings (through ``token_strings``) read back as its text, so the rule
    labels that need word boundaries ('raise ValueError') find them."""
    from paper_lib.case_studies import follow
    from paper_lib.case_studies.labels import concept_labels

    tokenizer = _sentencepiece_tokenizer("metaspace")
    monkeypatch.setattr(vocab, "_TOKEN_STRINGS", {})
    monkeypatch.setattr(vocab, "get_tokenizer", lambda cfg: tokenizer)
    monkeypatch.setattr(vocab, "tokenizer_hash", lambda cfg: "sentencepiece")
    monkeypatch.setattr(follow, "get_tokenizer", lambda cfg: tokenizer)
    text = "if x > 3:\n    raise ValueError(x)"
    _, strings = follow.tokenize_snippet(load_config("smoke"), text)
    assert "".join(strings).lstrip(" ") == text
    assert " raise" in strings
    exception = concept_labels(strings, ["python_exception"])[:, 0]
    assert exception[strings.index(" raise")] and not exception[0]
