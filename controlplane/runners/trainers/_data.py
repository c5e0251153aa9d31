"""Reading preference JSONL for training (pure Python, no training libraries).

The registry validates datasets when they are registered; a runner may still be handed a file
that is not one (a wrong path, a truncated download), so every trainer reads through here and
gets a :class:`TrainingError` naming the file and line instead of a stack trace from deep
inside a library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.errors import ControlPlaneError


class TrainingError(ControlPlaneError):
    """Training could not run: bad inputs or hyperparameters, or the training extra is missing."""

    status = 422
    title = "Training failed"
    code = "training-failed"


@dataclass(frozen=True)
class PreferenceRow:
    prompt: str
    chosen: str
    rejected: str
    chosen_unsafe: bool = False
    rejected_unsafe: bool = False


@dataclass
class PromptCandidates:
    """Every distinct response seen for one prompt, in first-seen order, with safety labels."""

    prompt: str
    responses: list[str] = field(default_factory=list)
    unsafe: set[str] = field(default_factory=set)

    def add(self, response: str, unsafe: bool) -> None:
        if response not in self.responses:
            self.responses.append(response)
        if unsafe:
            self.unsafe.add(response)


def _flag(record: dict[str, object], name: str, where: str) -> bool:
    value = record.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TrainingError(f"{where}: {name!r} must be true or false")
    return value


def read_preferences(paths: list[Path]) -> list[PreferenceRow]:
    """All rows of the given JSONL files, in order; at least one row in total."""
    if not paths:
        raise TrainingError("no dataset given: the trainer needs at least one preference file")
    rows: list[PreferenceRow] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TrainingError(f"dataset {path} does not exist") from None
        except IsADirectoryError:
            raise TrainingError(f"dataset {path} is a directory, not a JSONL file") from None
        except UnicodeDecodeError as exc:
            raise TrainingError(f"dataset {path} is not UTF-8 (byte {exc.start})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{Path(path).name} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise TrainingError(f"{where}: expected a JSON object")
            values = []
            for name in ("prompt", "chosen", "rejected"):
                value = record.get(name)
                if not isinstance(value, str) or not value.strip():
                    raise TrainingError(f"{where}: {name!r} must be a non-empty string")
                values.append(value.strip())
            if values[1] == values[2]:
                raise TrainingError(f"{where}: 'chosen' and 'rejected' are identical")
            rows.append(
                PreferenceRow(
                    *values,
                    chosen_unsafe=_flag(record, "chosen_unsafe", where),
                    rejected_unsafe=_flag(record, "rejected_unsafe", where),
                )
            )
    if not rows:
        raise TrainingError("the datasets hold no preference rows")
    return rows


def candidates_by_prompt(rows: list[PreferenceRow]) -> list[PromptCandidates]:
    """Group responses by prompt (first-seen order), merging safety labels across rows."""
    groups: dict[str, PromptCandidates] = {}
    for row in rows:
        group = groups.setdefault(row.prompt, PromptCandidates(row.prompt))
        group.add(row.chosen, row.chosen_unsafe)
        group.add(row.rejected, row.rejected_unsafe)
    return list(groups.values())


def format_prompt(prompt: str) -> str:
    """The one way a prompt is laid out before its response, in training and evaluation."""
    return prompt.strip() + "\n"


def texts_of(rows: list[PreferenceRow]) -> list[str]:
    """Every prompt with each of its responses, laid out as the trainers lay them out.

    Both responses of a pair, so a base model trained on these has read every kind of answer
    and learnt no preference between them: that is left to the reward model and DPO.
    """
    seen: dict[str, None] = {}
    for row in rows:
        for response in (row.chosen, row.rejected):
            seen.setdefault(format_prompt(row.prompt) + response, None)
    return list(seen)
