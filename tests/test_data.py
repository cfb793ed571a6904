"""Corpora loading and its errors, the tokenizer round trip, and packing into blocks."""

import gzip
import json

import pytest
import torch

from paper_lib import data
from paper_lib.core.config import DOMAINS, load_config


def _write(path, lines, raw=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        for line in lines:
            handle.write(line if raw else (json.dumps({"text": line}) + "\n").encode("utf-8"))


@pytest.fixture
def corpus_dir(tmp_path):
    for domain in DOMAINS:
        for split in data.SPLITS:
            _write(tmp_path / domain / f"{split}.jsonl.gz", [f"{domain} {split} document {i}\n" for i in range(5)])
    return tmp_path


def test_load_texts_reads_every_domain(smoke_cfg):
    for domain in DOMAINS:
        texts = data.load_texts(smoke_cfg, domain, "validation")
        assert texts.column_names == ["text"] and len(texts) > 10
        assert all(isinstance(t, str) and t for t in texts["text"][:5])


def test_missing_data_dir_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("PAPER_DATA_DIR", raising=False)
    cfg = load_config("smoke")
    with pytest.raises(data.DataError, match="PAPER_DATA_DIR"):
        data.load_texts(cfg, "lua", "train")


def test_missing_file_is_named(corpus_dir):
    (corpus_dir / "lua" / "train.jsonl.gz").unlink()
    cfg = load_config("smoke", {"data.data_dir": str(corpus_dir)})
    with pytest.raises(data.DataError, match=r"missing corpus file .*lua/train\.jsonl\.gz"):
        data.load_texts(cfg, "lua", "train")


def test_empty_corpus_is_an_error(corpus_dir):
    _write(corpus_dir / "lua" / "train.jsonl.gz", [])
    cfg = load_config("smoke", {"data.data_dir": str(corpus_dir)})
    with pytest.raises(data.DataError, match="empty"):
        data.load_texts(cfg, "lua", "train")


def test_non_utf8_is_an_error_naming_the_line(corpus_dir):
    _write(corpus_dir / "lua" / "train.jsonl.gz", [b'{"text": "ok"}\n', b'{"text": "caf\xe9"}\n'], raw=True)
    cfg = load_config("smoke", {"data.data_dir": str(corpus_dir)})
    with pytest.raises(data.DataError, match="line 2: not UTF-8"):
        data.load_texts(cfg, "lua", "train")


def test_bad_json_and_missing_text_field(corpus_dir):
    cfg = load_config("smoke", {"data.data_dir": str(corpus_dir)})
    _write(corpus_dir / "lua" / "train.jsonl.gz", [b'{"text": \n'], raw=True)
    with pytest.raises(data.DataError, match="not valid JSON"):
        data.load_texts(cfg, "lua", "train")
    _write(corpus_dir / "lua" / "train.jsonl.gz", [b'{"content": "x"}\n'], raw=True)
    with pytest.raises(data.DataError, match="no string 'text' field"):
        data.load_texts(cfg, "lua", "train")


def test_not_gzip_is_an_error(corpus_dir):
    (corpus_dir / "lua" / "train.jsonl.gz").write_bytes(b"plain text, not gzip")
    cfg = load_config("smoke", {"data.data_dir": str(corpus_dir)})
    with pytest.raises(data.DataError, match="gzip"):
        data.load_texts(cfg, "lua", "train")


def test_unknown_domain():
    with pytest.raises(data.DataError, match="unknown domain 'rust'"):
        data.load_texts(load_config("smoke"), "rust", "train")


def test_hub_source_failure_is_clear(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = load_config("smoke", {"data.source": "hub"})
    with pytest.raises(data.DataError, match="nilq/small-lua-stack.*PAPER_DATA_DIR"):
        data.load_texts(cfg, "lua", "train")


def test_tokenizer_round_trip(smoke_cfg):
    tokenizer = data.get_tokenizer(smoke_cfg)
    assert len(tokenizer) == smoke_cfg.data.vocab_size
    for text in ["def f(x):\n    return x ** 2  # square\n", "local t = {}\nfor i = 1, 10 do end", "Once upon a time, café ☃."]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "</s>"


def test_tokenizer_is_cached_and_deterministic(smoke_cfg):
    first = data.get_tokenizer(smoke_cfg)
    again = data.get_tokenizer(smoke_cfg)
    assert first.get_vocab() == again.get_vocab()


def test_blocks_and_even_mixture(smoke_cfg):
    stream = data.token_stream(smoke_cfg, "python", "validation", 3000)
    assert stream.dtype == torch.int64 and stream.numel() == 3000
    blocks = data.to_blocks(stream, 64)
    assert blocks.shape == (3000 // 64, 64)
    assert torch.equal(blocks.flatten(), stream[: blocks.numel()])
    mix = data.mixture_blocks(smoke_cfg, ("babylm", "python"), "validation", 2048, 32)
    assert mix.shape == (64, 32)
    with pytest.raises(data.DataError, match="not enough for one block"):
        data.to_blocks(stream[:10], 64)


def test_unigram_baseline_is_the_most_frequent_token():
    train = torch.tensor([5, 5, 5, 1, 2])
    evaluation = torch.tensor([0, 5, 5, 1])
    assert data.unigram_accuracy(train, evaluation, 8) == pytest.approx(2 / 3)
