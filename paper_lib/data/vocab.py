"""Token strings: the text of each token id, as labels, highlights and explanations show it."""

from __future__ import annotations

from ..core.artifacts import runs_root
from ..core.config import Config
from .tokenizer import get_tokenizer, tokenizer_hash

_TOKEN_STRINGS: dict[tuple[str, str, str], tuple[str, ...]] = {}


def token_strings(cfg: Config) -> list[str]:
    """The text of every token id of the run's tokenizer, each decoded on its own (so ' =' keeps its space).

    Decoding a 32k vocabulary one id at a time takes seconds, so the list is kept per tokenizer and run folder.
    """
    key = (str(runs_root()), cfg.profile, tokenizer_hash(cfg))
    if key not in _TOKEN_STRINGS:
        tokenizer = get_tokenizer(cfg)
        _TOKEN_STRINGS[key] = tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))
    return list(_TOKEN_STRINGS[key])
