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
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from ..core.artifacts import file_fingerprint
from ..core.config import DOMAINS, Config


SPLITS = ("train", "validation")


class DataError(RuntimeError):
    """A corpus that is missing, empty or unreadable."""


@dataclass(frozen=True)
class HubSource:
    dataset: str
    text_key: str
    splits: dict[str, str]  # our split name -> the dataset's split name


# The paper's datasets, checked against their dataset cards (each has one "default" config, so none needs a
# config name). The base model's data, nilq/baby-python (key "content", train 10.7M / validation 1.04M rows,
# https://huggingface.co/datasets/nilq/baby-python), is by its card "the BabyLM 100M dataset, evenly matched by
# a truncated subset of the small-python-stack": we read its two sources and mix them ourselves, evenly by
# tokens, so the Python domain is Python only (the case studies and probes read it alone).
HUB_SOURCES = {
    # https://huggingface.co/datasets/nilq/babylm-100M/viewer: splits train 10.6M, validation 1.03M, test 1.05M
    # rows. Its column is not shown there; "text" is the column of its sibling nilq/babylm-10M (card metadata).
    "babylm": HubSource("nilq/babylm-100M", "text", {"train": "train", "validation": "validation"}),
    # https://huggingface.co/datasets/nilq/small-python-stack (README metadata): feature "content"; splits train
    # 2,073,959 and validation 518,490 rows; "a random sample of 20% of the Python code" in The Stack.
    "python": HubSource("nilq/small-python-stack", "content", {"train": "train", "validation": "validation"}),
    # https://huggingface.co/datasets/nilq/small-lua-stack: column "content", 559k rows, "all of the Lua code
    # available in the original Stack". Its split list is not on the pages seen; nilq/baby-python-and-lua's
    # validation split is ~50k rows larger than nilq/baby-python's, which suggests a Lua validation split.
    "lua": HubSource("nilq/small-lua-stack", "content", {"train": "train", "validation": "validation"}),
    # https://huggingface.co/datasets/roneneldan/TinyStories/viewer: config "default", splits train 2.12M and
    # validation 22k rows (data/validation-*.parquet); the authors' fine-tuning config reads key "text".
    "tinystories": HubSource("roneneldan/TinyStories", "text", {"train": "train", "validation": "validation"}),
}

# What to do without the hub: the offline corpora and the project's own tokenizer.
OFFLINE_FIX = (
    "To run without the hub, set data.source: local with PAPER_DATA_DIR pointing at the offline corpora "
    "(<domain>/{train,validation}.jsonl.gz) and data.tokenizer: bpe."
)
_DENIED = {"GatedRepoError"}  # huggingface_hub: gated repo and no token, or terms not accepted
_NOT_FOUND = {"RepositoryNotFoundError", "DatasetNotFoundError"}  # no such repo, or private/gated and no token
_UNREACHABLE = {  # no network, offline mode, or a timeout (builtins, huggingface_hub, requests, httpx)
    "ConnectionError", "TimeoutError", "gaierror", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
    "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_failure(err: BaseException) -> str:
    """Why a hub download failed, from the exception and its causes: "denied" (gated, or HTTP 401/403),
    "not_found", "unreachable" or "other"."""
    names, statuses = set(), set()
    seen: list[BaseException] = []
    while err is not None and not any(err is e for e in seen):
        seen.append(err)
        names.update(cls.__name__ for cls in type(err).__mro__)
        statuses.add(getattr(getattr(err, "response", None), "status_code", None))
        err = err.__cause__ or err.__context__
    if names & _DENIED or statuses & {401, 403}:
        return "denied"
    if names & _NOT_FOUND:
        return "not_found"
    return "unreachable" if names & _UNREACHABLE else "other"


def hub_error(what: str, repo_id: str, err: BaseException, url: str) -> DataError:
    """The error for a hub download that failed: names ``what`` and ``repo_id``, says whether the hub was
    unreachable or refused access, and gives the offline fix. ``url`` is the repo's page."""
    kind = hub_failure(err)
    if kind == "denied":
        reason = f"access denied / gated: set HF_TOKEN and accept the terms on {url}"
    elif kind == "not_found":
        reason = f"not found, or private/gated and no token: check the id at {url}, and set HF_TOKEN if it is gated"
    elif kind == "unreachable":
        offline = [v for v in _OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in ("1", "true", "yes")]
        reason = "hub unreachable: " + (f"offline mode is on ({', '.join(offline)})" if offline else "check the network")
    else:
        reason = "check the id, the network and HF_TOKEN"
    return DataError(f"could not load {what} {repo_id} from the Hugging Face hub ({reason}): "
                     f"{type(err).__name__}: {str(err).strip().rstrip('.')}. {OFFLINE_FIX}")


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
    """What identifies a corpus for caching: content hash and size (local) or the dataset id and split (hub)."""
    if cfg.data.source == "local":
        return file_fingerprint(local_corpus_file(cfg, domain, split))
    source = HUB_SOURCES[domain]
    return f"{source.dataset}:{source.splits[split]}"


def describe_corpus(cfg: Config, domain: str, split: str) -> str:
    """A corpus as an error message names it: domain, split and file (local) or dataset id (hub)."""
    if cfg.data.source == "local":
        return f"{domain}/{split} ({local_data_dir(cfg) / domain / f'{split}.jsonl.gz'})"
    source = HUB_SOURCES[domain]
    return f"{domain}/{split} ({source.dataset}, split {source.splits[split]})"


def corpora_fingerprints(cfg: Config, domains, split: str) -> dict[str, str]:
    """``corpus_fingerprint`` of several domains' files of one split, for a cache key."""
    return {d: corpus_fingerprint(cfg, d, split) for d in domains}
