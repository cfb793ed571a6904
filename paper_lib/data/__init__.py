"""Corpora, the tokenizer and its token strings, packed token blocks, and the named samples each section reads."""

from .blocks import DataWarning, domain_blocks, eval_blocks, mixture_blocks, to_blocks, token_stream, unigram_accuracy
from .corpora import (
    HUB_SOURCES,
    SPLITS,
    DataError,
    check_corpora,
    corpora_fingerprints,
    corpus_fingerprint,
    describe_corpus,
    load_texts,
    local_corpus_file,
    local_data_dir,
    read_jsonl_texts,
)
from .samples import (
    AUTOINTERP_DOMAIN,
    MATCHING_DOMAINS,
    autointerp_blocks,
    matching_blocks,
    sae_train_blocks,
    sae_validation_blocks,
    search_blocks,
    validation_stream,
)
from .tokenizer import EOS, SPECIAL_TOKENS, get_tokenizer, tokenizer_dir, tokenizer_hash
from .vocab import token_strings, vocab_strings

# The data code a step depends on beyond its upstream folders (reading, mixing, cutting, sampling): every step
# that reads token blocks names these in its cache key, so a change to them rebuilds it.
DATA_CODE = ("paper_lib.data.corpora", "paper_lib.data.blocks", "paper_lib.data.samples")
