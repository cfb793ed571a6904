"""The report's inputs: saved figures/*.json read and checked (absent: not run; malformed: an error), the scale."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class ReportError(ValueError):
    """A saved results file that cannot be read or does not have the shape the report needs."""


class NotRun(LookupError):
    """A results file or table that is absent: the section it belongs to was not run."""


class Figures:
    """The JSON files of a figures folder (``<name>.json``, each ``{"profile", "data"}`` as written by
    ``plots.save_results``), loaded on first use; or payloads already in memory (``Figures.from_payloads``)."""

    def __init__(self, *folders: Path | str):
        self.folders = [Path(f) for f in folders]
        self._payloads: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_payloads(cls, payloads: dict[str, dict[str, Any]]) -> Figures:
        """Figures from ``{name: {"profile": ..., "data": ...}}`` (what a notebook just saved), checked alike."""
        figures = cls()
        for name, payload in payloads.items():
            figures._payloads[name] = figures._checked(payload, f"{name}.json")
        return figures

    def path(self, name: str) -> Path | None:
        """Where ``<name>.json`` is, or None when no folder has it."""
        for folder in self.folders:
            if (folder / f"{name}.json").is_file():
                return folder / f"{name}.json"
        return None

    def where(self, name: str) -> str:
        """How errors name a file: its path, or ``<name>.json`` for a payload held in memory."""
        return str(self.path(name) or f"{name}.json")

    @staticmethod
    def _checked(payload: Any, where: str) -> dict[str, Any]:
        if not isinstance(payload, dict) or "data" not in payload or not isinstance(payload.get("profile"), str):
            raise ReportError(f"{where}: expected an object with 'profile' (a string) and 'data', as "
                              "save_results writes")
        return payload

    def payload(self, name: str) -> dict[str, Any]:
        """The whole file: ``{"profile": str, "data": ...}``. NotRun when absent, ReportError when malformed."""
        if name not in self._payloads:
            path = self.path(name)
            if path is None:
                raise NotRun(f"{name}.json is absent")
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ReportError(f"{path}: not readable as JSON ({err}); rerun the notebook that writes it") from err
            self._payloads[name] = self._checked(payload, str(path))
        return self._payloads[name]

    def profile(self, name: str) -> str:
        """The profile that wrote ``<name>.json``."""
        return self.payload(name)["profile"]

    def data(self, name: str, *keys: str) -> Any:
        """``data`` of ``<name>.json``, or the value under ``keys`` in it. NotRun when a key is absent (a table
        the notebook did not write), ReportError when ``data`` is not an object where a key is looked up."""
        value = self.payload(name)["data"]
        for depth, key in enumerate(keys):
            if not isinstance(value, dict):
                where = ".".join(keys[:depth]) or "data"
                raise ReportError(f"{self.where(name)}: '{where}' is a {type(value).__name__}, expected an object")
            if key not in value:
                raise NotRun(f"{name}.json has no '{'.'.join(keys[: depth + 1])}'")
            value = value[key]
        return value

    def records(self, name: str, *keys: str, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        """A table saved as a list of records, each checked to carry ``fields`` (ReportError naming the file and
        the field otherwise). An empty table counts as not run."""
        table = self.data(name, *keys)
        where = ".".join(keys) or "data"
        if not isinstance(table, list) or not all(isinstance(row, dict) for row in table):
            raise ReportError(f"{self.where(name)}: '{where}' should be a list of records")
        for i, row in enumerate(table):
            missing = [f for f in fields if f not in row]
            if missing:
                raise ReportError(f"{self.where(name)}: record {i} of '{where}' lacks {', '.join(map(repr, missing))}")
        if not table:
            raise NotRun(f"{name}.json has an empty '{where}'")
        return table

    def profiles(self, names: Sequence[str]) -> dict[str, str]:
        """``{name: profile}`` of those of ``names`` that are present (malformed ones raise ReportError)."""
        found = {}
        for name in names:
            try:
                found[name] = self.profile(name)
            except NotRun:
                continue
        return found


# The settings that make a run the paper's size: (config path, label). Numbers that depend on them (loss,
# accuracy, shares of a dictionary's features) are compared with the paper's only where none differs.
SCALE_FIELDS = (
    ("model.hidden_size", "hidden size"),
    ("model.intermediate_size", "MLP size"),
    ("model.num_attention_heads", "attention heads"),
    ("data.source", "data"),
    ("data.tokenizer", "tokenizer"),
    ("data.vocab_size", "vocabulary"),
    ("data.base_train_tokens", "base training tokens"),
    ("data.finetune_train_tokens", "fine-tuning tokens per domain"),
    ("sae.expansion_factor", "SAE expansion factor"),
    ("sae.training_tokens", "SAE training tokens"),
)


def _lookup(cfg, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _show(value) -> str:
    if value is None:
        return "all available"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def scale_differences(profile: str) -> list[str]:
    """How ``profile`` differs from the paper's scale, one 'label ours (paper theirs)' per differing setting of
    ``SCALE_FIELDS``; empty for a run at the paper's scale. A profile that cannot be loaded is named as such."""
    from ..core.config import ConfigError, load_config

    try:
        ours, paper = load_config(profile), load_config("paper")
    except (ConfigError, OSError, ValueError) as err:
        return [f"profile {profile!r} cannot be loaded to compare its sizes ({err})"]
    gaps = []
    for dotted, label in SCALE_FIELDS:
        mine, theirs = _lookup(ours, dotted), _lookup(paper, dotted)
        if mine != theirs:
            gaps.append(f"{label} {_show(mine)} (paper {_show(theirs)})")
    return gaps
