"""Token strings: the text of each token id, as labels, highlights and explanations show it.

Why offsets rather than ``tokenizer.decode([id])``: a sentencepiece-style tokenizer (Mistral's and Llama's:
a Metaspace pre-tokenizer, or a "▁" prepend normalizer, with pieces such as "▁the") strips the leading space
from the first token of whatever it decodes, so each id decoded alone loses its word boundary ("the", not
" the") and labels, highlights and autointerp records run words together. Instead every id is rendered after
a fixed context (a newline), that text is tokenised again with ``return_offsets_mapping``, and the id's string
is the span of text the tokenizer itself maps to that id. When the rendered text does not tokenise back to
the id as one whole, unshared last token (special and added tokens, byte-fallback and partial-UTF-8 pieces,
pieces that merge with the context or that another segmentation wins), the id keeps ``decode([id])``, with
the leading whitespace its rendering in context adds, if that is all the rendering adds. For a byte-level BPE
(the ``bpe`` tokenizer) both are exactly ``decode([id])`` for every id, so its strings are unchanged.
"""

from __future__ import annotations

from ..core.artifacts import runs_root
from ..core.config import Config
from .tokenizer import get_tokenizer, tokenizer_hash

CONTEXTS = ("\n", ".")  # what an id is rendered after: the first that the tokenizer round-trips is used

_TOKEN_STRINGS: dict[tuple[str, str, str], tuple[str, ...]] = {}


def _context(tokenizer) -> tuple[list[int], str] | None:
    """Ids and text of the first context that encodes without ``<unk>`` and decodes back to itself."""
    for text in CONTEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids and tokenizer.unk_token_id not in ids and _decode(tokenizer, ids) == text:
            return ids, text
    return None


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def vocab_strings(tokenizer) -> list[str]:
    """The surface text of every id of a fast tokenizer, leading space included (see the module docstring).

    A few seconds for a 32k vocabulary (rendering and re-encoding are batched); a tokenizer without offset
    mappings (not a fast one) keeps ``decode([id])``.
    """
    n = len(tokenizer)
    alone = [tokenizer.decode([i]) for i in range(n)]  # the fallback, and what a byte-level BPE yields anyway
    context = _context(tokenizer) if getattr(tokenizer, "is_fast", False) else None
    if context is None:
        return alone
    prefix_ids, prefix = context
    added = set(tokenizer.added_tokens_decoder)
    candidates = [i for i in range(n) if i not in added]
    rendered = tokenizer.batch_decode(
        [prefix_ids + [i] for i in candidates], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    strings = list(alone)
    start = len(prefix)
    for i, text, ids, offsets in zip(candidates, rendered, encoded["input_ids"], encoded["offset_mapping"]):
        # Accept the span only if the id comes back as the last token, covering exactly the text rendered for
        # it and shared with no other token (a byte of a multi-byte character shares its character's span).
        if (
            text.startswith(prefix)
            and len(text) > start
            and ids
            and ids[-1] == i
            and tuple(offsets[-1]) == (start, len(text))
            and (len(offsets) < 2 or offsets[-2][1] <= start)
        ):
            strings[i] = text[start:]
        elif text.startswith(prefix):
            strings[i] = _with_leading_space(text[start:], alone[i])
    return strings


def _with_leading_space(rendered: str, alone: str) -> str:
    """``rendered`` if it is ``alone`` behind whitespace only (the word boundary decoding alone strips)."""
    head = rendered[: len(rendered) - len(alone)]
    return rendered if rendered.endswith(alone) and head and not head.strip() else alone


def token_strings(cfg: Config) -> list[str]:
    """The text of every token id of the run's tokenizer (``vocab_strings``), so ' =' keeps its space.

    Kept per tokenizer and run folder, as the rest of the code asks for it often.
    """
    key = (str(runs_root()), cfg.profile, tokenizer_hash(cfg))
    if key not in _TOKEN_STRINGS:
        _TOKEN_STRINGS[key] = tuple(vocab_strings(get_tokenizer(cfg)))
    return list(_TOKEN_STRINGS[key])
