"""The run's tokenizer (a byte-level BPE trained on the base mixture, or the hub's) and its token strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.artifacts import cached_step
from ..core.config import Config
from .corpora import corpus_fingerprint, hub_error, load_texts

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # Mistral's: unknown, beginning and end of sequence (ids 0, 1, 2)
EOS = "</s>"  # separates documents in a packed token stream


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


def tokenizer_dir(cfg: Config) -> Path:
    """The run's tokenizer folder (trained, or fetched from the hub, once per inputs and code)."""
    if cfg.data.tokenizer == "hub":

        def fetch(out_dir: Path) -> dict:
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(cfg.data.hub_tokenizer)
            except Exception as err:  # hub_error says whether the hub was unreachable or refused access
                url = f"https://huggingface.co/{cfg.data.hub_tokenizer}"
                raise hub_error("tokenizer", cfg.data.hub_tokenizer, err, url) from err
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.save_pretrained(out_dir)
            return {"vocab_size": len(tok)}

        return cached_step(cfg.profile, "tokenizer", _tokenizer_inputs(cfg), fetch, code=["paper_lib.data.corpora"])
    return cached_step(
        cfg.profile, "tokenizer", _tokenizer_inputs(cfg), lambda out: _train_bpe(cfg, out), code=["paper_lib.data.corpora"]
    )


def get_tokenizer(cfg: Config):
    """The run's tokenizer as a ``PreTrainedTokenizerFast`` (see ``tokenizer_dir``)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = tokenizer_dir(cfg)
    return AutoTokenizer.from_pretrained(path) if cfg.data.tokenizer == "hub" else PreTrainedTokenizerFast.from_pretrained(path)


def tokenizer_hash(cfg: Config) -> str:
    """Identifies the tokenizer for downstream caches: its folder's name, which covers its inputs and its code."""
    return tokenizer_dir(cfg).name
