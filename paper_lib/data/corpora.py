"""Corpora: the offline JSON-lines files or the paper's hub datasets, behind one interface, fingerprinted.

Two sources return HF ``datasets`` with a ``text`` column:

* ``local``: ``<data_dir or $PAPER_DATA_DIR>/<domain>/{train,validation}.jsonl.gz``, one JSON object a line
  with a ``text`` field (the offline corpora);
* ``hub``: the paper's datasets on the Hugging Face hub (online machines and Colab).

There is no silent fallback from one to the other: an unavailable source is an error that says what was
looked for and how to fix it.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

from datasets import Dataset

from ..core.artifacts import file_fingerprint
from ..core.config import DOMAINS, Config
# The hub's dataset ids and their error messages live apart: a dataset's id, split and text key are in the
# fingerprint of every corpus read from the hub, so editing that module rebuilds nothing that did not change.
from .hub import HUB_SOURCES, hub_error_message


SPLITS = ("train", "validation")


class DataError(RuntimeError):
    """A corpus that is missing, empty or unreadable."""


def hub_error(what: str, repo_id: str, err: BaseException, url: str) -> DataError:
    """The ``DataError`` for a failed hub download (``hub.hub_error_message``: which failure, and the fix)."""
    return DataError(hub_error_message(what, repo_id, err, url))


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
            "<domain>/{train,validation}.jsonl.gz (e.g. export PAPER_DATA_DIR=\"$(realpath ../shared/data)\"), set "
            "data.data_dir in the profile, or use data.source: hub."
        )
    path = Path(configured).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"corpus folder {path} (from data.data_dir or PAPER_DATA_DIR={configured}) does not exist. Point it at "
            "the folder holding <domain>/{train,validation}.jsonl.gz with an absolute path, e.g. "
            'export PAPER_DATA_DIR="$(realpath ../shared/data)".'
        )
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
                    _check_gzip_intact(path)
                    raise DataError(f"{path}, line {number}: not UTF-8 ({err}). Re-encode the file as UTF-8.")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    _check_gzip_intact(path)  # corruption inside a gzip stream decodes to garbage lines first
                    raise DataError(f"{path}, line {number}: not valid JSON ({err}).") from err
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise DataError(f"{path}, line {number}: no string 'text' field.")
                if text:
                    texts.append(text)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot read the file ({err}): it is not a complete, valid gzip file. Restore or re-create it."
        ) from err
    if not texts:
        raise DataError(f"{path}: the corpus is empty (no line with a non-empty 'text').")
    return texts


def _check_gzip_intact(path: Path) -> None:
    """Raise a DataError naming gzip corruption if the file's compressed stream does not check out (CRC, length)."""
    if not str(path).endswith(".gz"):
        return
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: the gzip stream is corrupt ({err}); its lines cannot be trusted. Restore or re-create the file."
        ) from err


def check_corpora(cfg: Config, domains=DOMAINS, splits=SPLITS) -> None:
    """Check, before any work starts, that every local corpus file a run reads exists and begins with a valid
    record (a full read of each happens when it is tokenised). Hub datasets are checked when they load."""
    if cfg.data.source != "local":
        return
    for domain in domains:
        for split in splits:
            path = local_corpus_file(cfg, domain, split)
            try:
                with gzip.open(path, "rb") as handle:
                    first = handle.readline()
                record = json.loads(first.decode("utf-8"))
            except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DataError(f"{path}: cannot read its first record ({err}); restore or re-create the file.") from err
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path}, line 1: no string 'text' field (each line must be a JSON object with 'text').")


def load_texts(cfg: Config, domain: str, split: str) -> Dataset:
    """One domain's split as a ``datasets.Dataset`` with a single ``text`` column."""
    _check_domain_split(domain, split)
    if cfg.data.source == "local":
        return Dataset.from_dict({"text": read_jsonl_texts(local_corpus_file(cfg, domain, split))})
    source = HUB_SOURCES[domain]
    try:
        from datasets import load_dataset

        dataset = load_dataset(source.dataset, split=source.splits[split])
    except Exception as err:  # the hub raises many kinds of errors; hub_error tells the user which it was
        url = f"https://huggingface.co/datasets/{source.dataset}"
        raise hub_error(f"split {source.splits[split]} of dataset", source.dataset, err, url) from err
    if source.text_key not in dataset.column_names:
        raise DataError(f"{source.dataset} has no '{source.text_key}' column (columns: {dataset.column_names}).")
    return dataset.select_columns([source.text_key]).rename_column(source.text_key, "text")


def corpus_fingerprint(cfg: Config, domain: str, split: str) -> str:
    """What identifies a corpus for caching: content hash and size (local) or the dataset id, split and text
    column (hub)."""
    if cfg.data.source == "local":
        return file_fingerprint(local_corpus_file(cfg, domain, split))
    source = HUB_SOURCES[domain]
    return f"{source.dataset}:{source.splits[split]}:{source.text_key}"


def describe_corpus(cfg: Config, domain: str, split: str) -> str:
    """A corpus as an error message names it: domain, split and file (local) or dataset id (hub)."""
    if cfg.data.source == "local":
        return f"{domain}/{split} ({local_data_dir(cfg) / domain / f'{split}.jsonl.gz'})"
    source = HUB_SOURCES[domain]
    return f"{domain}/{split} ({source.dataset}, split {source.splits[split]})"


def corpora_fingerprints(cfg: Config, domains, split: str) -> dict[str, str]:
    """``corpus_fingerprint`` of several domains' files of one split, for a cache key."""
    return {d: corpus_fingerprint(cfg, d, split) for d in domains}
