"""Corpora, tokenizer and packed token blocks.

Two sources sit behind one interface that returns HF ``datasets`` with a ``text`` column:

* ``local``: ``<data_dir or $PAPER_DATA_DIR>/<domain>/{train,validation}.jsonl.gz``, one JSON object a line
  with a ``text`` field (the offline corpora);
* ``hub``: the paper's datasets on the Hugging Face hub (online machines and Colab).

There is no silent fallback from one to the other: an unavailable source is an error that says what was
looked for and how to fix it. Tokenised text is cached in the run folder as flat token streams, which are
cut into fixed-length blocks (256 tokens for the language models, 24 for the SAEs).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from .artifacts import cached_step, file_digest, stable_hash
from .config import DOMAINS, Config

SPLITS = ("train", "validation")
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # Mistral's: unknown, beginning and end of sequence
EOS = "</s>"  # separates documents in a packed token stream


class DataError(RuntimeError):
    """A corpus that is missing, empty or unreadable."""


@dataclass(frozen=True)
class HubSource:
    dataset: str
    text_key: str
    splits: dict[str, str]  # our split name -> the dataset's split name


# The paper's datasets (PAPER.md). nilq/baby-python is BabyLM-100M evenly matched with a truncated
# small-python-stack; we mix the two parts ourselves, evenly by tokens, so both sources share one code path.
HUB_SOURCES = {
    "babylm": HubSource("nilq/babylm-100M", "text", {"train": "train", "validation": "validation"}),
    "python": HubSource("nilq/small-python-stack", "content", {"train": "train", "validation": "validation"}),
    "lua": HubSource("nilq/small-lua-stack", "content", {"train": "train", "validation": "validation"}),
    "tinystories": HubSource("roneneldan/TinyStories", "text", {"train": "train", "validation": "validation"}),
}


def _check_domain_split(domain: str, split: str) -> None:
    if domain not in DOMAINS:
        raise DataError(f"unknown domain '{domain}'; domains are {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; splits are {', '.join(SPLITS)}")


def local_data_dir(cfg: Config) -> Path:
    """The folder of the offline corpora: ``cfg.data.data_dir`` or ``$PAPER_DATA_DIR``."""
    configured = cfg.data.data_dir or os.environ.get("PAPER_DATA_DIR")
    if not configured:
        raise DataError(
            "data.source is 'local' but no corpus folder is set. Set PAPER_DATA_DIR to a folder with "
            "<domain>/{train,validation}.jsonl.gz (e.g. export PAPER_DATA_DIR=../shared/data), set "
            "data.data_dir in the profile, or use data.source: hub."
        )
    path = Path(configured).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"corpus folder {path} (from data.data_dir or PAPER_DATA_DIR) does not exist.")
    return path


def local_corpus_file(cfg: Config, domain: str, split: str) -> Path:
    """Path of one local corpus file, checked to exist."""
    _check_domain_split(domain, split)
    path = local_data_dir(cfg) / domain / f"{split}.jsonl.gz"
    if not path.is_file():
        raise DataError(
            f"missing corpus file {path}. Expected <PAPER_DATA_DIR>/{domain}/{split}.jsonl.gz "
            "(one JSON object a line with a 'text' field)."
        )
    return path


def read_jsonl_texts(path: Path) -> list[str]:
    """Read the ``text`` field of every line of a (gzipped) JSON-lines file, with clear errors."""
    opener = gzip.open if str(path).endswith(".gz") else open
    texts: list[str] = []
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}, line {number}: not UTF-8 ({err}). Re-encode the file as UTF-8.")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}, line {number}: not valid JSON ({err}).") from err
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise DataError(f"{path}, line {number}: no string 'text' field.")
                if text:
                    texts.append(text)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read the file ({err}). Is it a valid gzip file?") from err
    if not texts:
        raise DataError(f"{path}: the corpus is empty (no line with a non-empty 'text').")
    return texts


def load_texts(cfg: Config, domain: str, split: str) -> Dataset:
    """One domain's split as a ``datasets.Dataset`` with a single ``text`` column."""
    _check_domain_split(domain, split)
    if cfg.data.source == "local":
        return Dataset.from_dict({"text": read_jsonl_texts(local_corpus_file(cfg, domain, split))})
    source = HUB_SOURCES[domain]
    try:
        from datasets import load_dataset

        dataset = load_dataset(source.dataset, split=source.splits[split])
    except Exception as err:  # the hub raises many kinds of errors; all mean the same to the user
        raise DataError(
            f"could not load {source.dataset} (split {source.splits[split]}) from the Hugging Face hub: {err}. "
            "Check the network and HF_TOKEN, or use data.source: local with PAPER_DATA_DIR."
        ) from err
    if source.text_key not in dataset.column_names:
        raise DataError(f"{source.dataset} has no '{source.text_key}' column (columns: {dataset.column_names}).")
    return dataset.select_columns([source.text_key]).rename_column(source.text_key, "text")


def corpus_fingerprint(cfg: Config, domain: str, split: str) -> str:
    """What identifies a corpus for caching: a content hash (local) or the dataset id (hub)."""
    if cfg.data.source == "local":
        return file_digest(local_corpus_file(cfg, domain, split))
    source = HUB_SOURCES[domain]
    return f"{source.dataset}:{source.splits[split]}"


# ----------------------------------------------------------------------------------------------- tokenizer


def _tokenizer_inputs(cfg: Config) -> dict:
    if cfg.data.tokenizer == "hub":
        return {"hub_tokenizer": cfg.data.hub_tokenizer}
    return {
        "vocab_size": cfg.data.vocab_size,
        "train_chars": cfg.data.tokenizer_train_chars,
        "corpora": {d: corpus_fingerprint(cfg, d, "train") for d in ("babylm", "python")},
        "seed": cfg.seed,
    }


def _base_mixture_text(cfg: Config, n_chars: int) -> list[str]:
    """Shuffled BabyLM and Python documents, half the characters from each (the base model's mixture)."""
    texts: list[str] = []
    for offset, domain in enumerate(("babylm", "python")):
        docs = list(load_texts(cfg, domain, "train")["text"])
        order = np.random.default_rng(cfg.seed + offset).permutation(len(docs))
        budget = n_chars // 2
        for index in order:
            if budget <= 0:
                break
            doc = docs[int(index)][:budget]
            texts.append(doc)
            budget -= len(doc)
    return texts


def _train_bpe(cfg: Config, out_dir: Path) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = _base_mixture_text(cfg, cfg.data.tokenizer_train_chars)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.data.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    hf = _wrap_tokenizer(tokenizer)
    hf.save_pretrained(out_dir)
    return {"vocab_size": len(hf), "train_chars": sum(len(t) for t in texts)}


def _wrap_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def get_tokenizer(cfg: Config):
    """The run's tokenizer as a ``PreTrainedTokenizerFast``: trained once per inputs and cached."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if cfg.data.tokenizer == "hub":

        def fetch(out_dir: Path) -> dict:
            try:
                tok = AutoTokenizer.from_pretrained(cfg.data.hub_tokenizer)
            except Exception as err:
                raise DataError(
                    f"could not load tokenizer {cfg.data.hub_tokenizer} from the hub: {err}. "
                    "Use data.tokenizer: bpe to train one locally."
                ) from err
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.save_pretrained(out_dir)
            return {"vocab_size": len(tok)}

        path = cached_step(cfg.profile, "tokenizer", _tokenizer_inputs(cfg), fetch)
        return AutoTokenizer.from_pretrained(path)
    path = cached_step(cfg.profile, "tokenizer", _tokenizer_inputs(cfg), lambda out: _train_bpe(cfg, out))
    return PreTrainedTokenizerFast.from_pretrained(path)


def tokenizer_hash(cfg: Config) -> str:
    """Identifies the tokenizer for downstream caches."""
    return stable_hash(_tokenizer_inputs(cfg))


# ---------------------------------------------------------------------------------------------- token data


def token_stream(cfg: Config, domain: str, split: str, max_tokens: int | None = None) -> torch.Tensor:
    """A 1-D tensor of token ids: the split's documents in a seeded shuffled order, each followed by EOS.

    Only as many documents as needed for ``max_tokens`` are tokenised (the hub corpora are large);
    the stream is cached in the run folder.
    """
    _check_domain_split(domain, split)
    inputs = {
        "domain": domain,
        "split": split,
        "max_tokens": max_tokens,
        "tokenizer": tokenizer_hash(cfg),
        "corpus": corpus_fingerprint(cfg, domain, split),
        "seed": cfg.seed,
    }

    def build(out_dir: Path) -> dict:
        tokenizer = get_tokenizer(cfg)
        eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        dataset = load_texts(cfg, domain, split)
        order = np.random.default_rng(cfg.seed).permutation(len(dataset))
        chunks: list[np.ndarray] = []
        total = 0
        batch = 256
        with tqdm(total=max_tokens, desc=f"tokenising {domain}/{split}", unit="tok", leave=False) as bar:
            for start in range(0, len(order), batch):
                texts = list(dataset.select(order[start : start + batch].tolist())["text"])
                for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                    ids.append(eos_id)
                    chunks.append(np.asarray(ids, dtype=np.int32))
                    total += len(ids)
                    bar.update(len(ids))
                if max_tokens is not None and total >= max_tokens:
                    break
        stream = np.concatenate(chunks)[:max_tokens]
        np.save(out_dir / "tokens.npy", stream)
        return {"n_tokens": int(stream.size), "n_documents": len(chunks)}

    path = cached_step(cfg.profile, f"tokens-{domain}-{split}", inputs, build)
    return torch.from_numpy(np.load(path / "tokens.npy").astype(np.int64))


def to_blocks(stream: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cut a token stream into ``[n_blocks, block_size]`` (the remainder is dropped)."""
    n_blocks = stream.numel() // block_size
    if n_blocks == 0:
        raise DataError(f"only {stream.numel()} tokens: not enough for one block of {block_size}.")
    return stream[: n_blocks * block_size].view(n_blocks, block_size)


def domain_blocks(
    cfg: Config, domain: str, split: str, max_tokens: int | None = None, block_size: int | None = None
) -> torch.Tensor:
    """Packed ``[n_blocks, block_size]`` token ids of one domain (block size defaults to the LM's)."""
    return to_blocks(token_stream(cfg, domain, split, max_tokens), block_size or cfg.data.block_size)


def mixture_blocks(
    cfg: Config, domains: tuple[str, ...] | list[str], split: str, total_tokens: int | None, block_size: int
) -> torch.Tensor:
    """Blocks drawn evenly by tokens from several domains, shuffled together with the run's seed.

    Each domain contributes ``total_tokens / len(domains)`` tokens, or, if one has fewer, as many as the
    smallest has, so the mixture stays even (the paper's base data matches BabyLM with as much Python).
    """
    per_domain = None if total_tokens is None else total_tokens // len(domains)
    streams = [token_stream(cfg, d, split, per_domain) for d in domains]
    even = min(s.numel() for s in streams)
    blocks = torch.cat([to_blocks(s[:even], block_size) for s in streams])
    generator = torch.Generator().manual_seed(cfg.seed)
    return blocks[torch.randperm(len(blocks), generator=generator)]


def base_train_blocks(cfg: Config) -> torch.Tensor:
    """BabyPython's training blocks: BabyLM and Python, evenly by tokens."""
    return mixture_blocks(cfg, ("babylm", "python"), "train", cfg.data.base_train_tokens, cfg.data.block_size)


def eval_blocks(cfg: Config, domain: str) -> torch.Tensor:
    """Validation blocks of one domain used for every loss/accuracy number."""
    return domain_blocks(cfg, domain, "validation", cfg.data.eval_tokens)


def unigram_accuracy(train_stream: torch.Tensor, eval_stream: torch.Tensor, vocab_size: int) -> float:
    """Accuracy of always predicting the most frequent training token: the floor a real LM must beat."""
    counts = torch.bincount(train_stream, minlength=vocab_size)
    return float((eval_stream[1:] == counts.argmax()).float().mean())

