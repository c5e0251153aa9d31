"""The shipped demo dataset: reproducible from its generator, accepted by the registry, and
shaped so the trainers have something to learn and something held out to be judged on."""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.demo_data import RUBRIC_REF, demo_data, generate
from controlplane.registry import datasets


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    shipped = demo_data()
    fresh = generate(tmp_path)
    for name in ("train", "eval", "rubric"):
        assert getattr(fresh, name).read_bytes() == getattr(shipped, name).read_bytes(), name


def test_registry_accepts_both_splits_with_annotators_and_agreement() -> None:
    data = demo_data()
    train = datasets.summarize(data.train.read_bytes(), key=b"k", project="demo")
    held_out = datasets.summarize(data.eval.read_bytes(), key=b"k", project="demo")
    assert 100 <= train.stats["rows"] <= 300
    assert held_out.stats["rows"] >= 40
    assert train.stats["distinct_annotators"] >= 4
    agreement = train.stats["agreement"]
    assert agreement["pairs_multiply_judged"] >= 20
    # Mostly agreeing annotators, but not unanimous: a real figure to look at.
    assert 0.6 < agreement["pairwise_agreement"] < 1.0
    assert train.rubric_refs == held_out.rubric_refs == [RUBRIC_REF]
    rubric = datasets.summarize_rubric(data.rubric.read_bytes(), data.rubric.name)
    assert rubric["format"] == "markdown"
    assert "rubric" in rubric["title"].lower()


def test_held_out_prompts_are_new_and_unsafe_answers_are_labelled() -> None:
    data = demo_data()
    train, held_out = rows(data.train), rows(data.eval)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}
    for split in (train, held_out):
        unsafe = [r for r in split if r.get("rejected_unsafe")]
        assert unsafe, "the safety signal must be present in both splits"
        # Rubric rule 4: nobody prefers the unsafe answer.
        assert not any(r.get("chosen_unsafe") for r in split)
        assert all(r["rubric"] == RUBRIC_REF for r in split)
