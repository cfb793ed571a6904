"""The paper's datasets on the Hugging Face hub, and what a failed download says.

Kept apart from ``corpora`` (whose code keys every cached data step): what identifies a hub corpus (dataset id,
split, text column) goes into the corpus fingerprint itself, and an error message changes no result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
    "not_found", "unreachable" or "other". The hub answers a missing repository with 401 when no token is sent,
    so the exception's type is read before the status code."""
    names, statuses = set(), set()
    seen: list[BaseException] = []
    while err is not None and not any(err is e for e in seen):
        seen.append(err)
        names.update(cls.__name__ for cls in type(err).__mro__)
        statuses.add(getattr(getattr(err, "response", None), "status_code", None))
        err = err.__cause__ or err.__context__
    if names & _DENIED:
        return "denied"
    if names & _NOT_FOUND:
        return "not_found"
    if statuses & {401, 403}:
        return "denied"
    return "unreachable" if names & _UNREACHABLE else "other"


def hub_error_message(what: str, repo_id: str, err: BaseException, url: str) -> str:
    """The message for a hub download that failed: names ``what`` and ``repo_id``, says whether the hub was
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
    return (f"could not load {what} {repo_id} from the Hugging Face hub ({reason}): "
            f"{type(err).__name__}: {str(err).strip().rstrip('.')}. {OFFLINE_FIX}")
