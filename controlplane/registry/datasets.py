"""Preference datasets in JSONL: validation, digest and statistics.

Each line is an object with non-empty strings ``prompt``, ``chosen`` and ``rejected`` and
optional ``annotator`` and ``rubric``. Annotators are replaced by keyed pseudonyms
(HMAC-SHA-256) before anything is recorded, so an immutable ledger never holds personal data.
Agreement is measured where several annotators judged the same pair (same prompt, same two
responses in either order): the share of annotator pairs that preferred the same response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import InvalidInput

REQUIRED = ("prompt", "chosen", "rejected")
OPTIONAL = ("annotator", "rubric")


def pseudonym(key: bytes, project: str, annotator: str) -> str:
    """Stable keyed pseudonym of an annotator within a project."""
    mac = hmac.new(key, f"{project}\x00{annotator}".encode(), hashlib.sha256)
    return "anon-" + mac.hexdigest()[:20]


@dataclass
class DatasetSummary:
    digest: str
    stats: dict[str, Any]
    pseudonyms: dict[str, str] = field(default_factory=dict)  # pseudonym -> annotator
    rubric_refs: list[str] = field(default_factory=list)


def _pair_key(prompt: str, a: str, b: str) -> str:
    low, high = sorted((a, b))
    return hashlib.sha256(json.dumps([prompt, low, high]).encode()).hexdigest()


def _agreement(judgements: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """Pairwise agreement over pairs judged by two or more distinct annotators."""
    agreeing = total = pairs = 0
    for votes in judgements.values():
        by_annotator = dict(votes)  # last vote of each annotator counts
        if len(by_annotator) < 2:
            continue
        pairs += 1
        choices = list(by_annotator.values())
        for i in range(len(choices)):
            for j in range(i + 1, len(choices)):
                total += 1
                agreeing += choices[i] == choices[j]
    return {
        "pairs_multiply_judged": pairs,
        "annotator_pairs_compared": total,
        "pairwise_agreement": round(agreeing / total, 6) if total else None,
    }


def summarize(content: bytes, *, key: bytes, project: str) -> DatasetSummary:
    """Validate every line and compute the digest and statistics.

    Raises :class:`InvalidInput` naming the first bad line (1-based).
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"dataset is not UTF-8 (byte {exc.start})") from None
    rows = 0
    per_annotator: Counter[str] = Counter()
    rubrics: Counter[str] = Counter()
    pseudonyms: dict[str, str] = {}
    judgements: dict[str, list[tuple[str, str]]] = defaultdict(list)
    unattributed = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {number}: not valid JSON ({exc.msg})", line=number) from None
        if not isinstance(record, dict):
            raise InvalidInput(f"line {number}: expected a JSON object", line=number)
        for name in REQUIRED:
            value = record.get(name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInput(
                    f"line {number}: {name!r} must be a non-empty string", line=number
                )
        if record["chosen"] == record["rejected"]:
            raise InvalidInput(f"line {number}: 'chosen' and 'rejected' are identical", line=number)
        for name in OPTIONAL:
            if name in record and record[name] is not None and not isinstance(record[name], str):
                raise InvalidInput(f"line {number}: {name!r} must be a string", line=number)
        rows += 1
        annotator = record.get("annotator")
        if annotator:
            alias = pseudonym(key, project, annotator)
            pseudonyms[alias] = annotator
            per_annotator[alias] += 1
            judgements[_pair_key(record["prompt"], record["chosen"], record["rejected"])].append(
                (alias, record["chosen"])
            )
        else:
            unattributed += 1
        if record.get("rubric"):
            rubrics[record["rubric"]] += 1
    if rows == 0:
        raise InvalidInput("dataset has no rows")
    stats = {
        "rows": rows,
        "distinct_annotators": len(per_annotator),
        "rows_per_annotator": dict(sorted(per_annotator.items())),
        "unattributed_rows": unattributed,
        "agreement": _agreement(judgements),
        "rubric_refs": dict(sorted(rubrics.items())),
        "bytes": len(content),
    }
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    return DatasetSummary(digest, stats, pseudonyms, sorted(rubrics))


def summarize_rubric(content: bytes, filename: str | None = None) -> dict[str, Any]:
    """Metadata of a rubric document (Markdown or plain text)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"rubric is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise InvalidInput("rubric document is empty")
    title = next(
        (line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")), None
    )
    lower = (filename or "").lower()
    fmt = "markdown" if lower.endswith((".md", ".markdown")) or title else "text"
    return {
        "format": fmt,
        "title": title or text.strip().splitlines()[0][:200],
        "lines": len(text.splitlines()),
        "bytes": len(content),
    }
