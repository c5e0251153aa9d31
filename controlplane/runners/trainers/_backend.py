"""What every built-in trainer shares once the training libraries are imported.

Imported only from inside :func:`controlplane.runners.trainers.run_trainer` and
:func:`~controlplane.runners.trainers.build_base_model`, so the API server never loads torch.

The models are tiny on purpose: a two-layer GPT-2 with 64-wide embeddings and a byte-level
BPE tokenizer trained on the dataset's own text. Nothing is downloaded: the hub is switched off
for the process before transformers is imported, and every model is built from a config or
loaded from a local directory.
"""

from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    TrainerCallback,
)

from controlplane.runners.trainers._data import TrainingError, format_prompt

# A library imported earlier in the process may have frozen its offline flag already.
huggingface_hub.constants.HF_HUB_OFFLINE = True

EOS = "<|endoftext|>"
PAD = "<|pad|>"
MAX_THREADS = 1
"""One intra-op thread: these models are far too small to gain from more, and on two shared
cores a second spinning thread made a training step six times slower (38 ms against 227 ms)."""
Progress = Callable[[float, str], None]


def prepare(seed: int) -> None:
    """Quiet, offline, deterministic, and at most two CPU threads."""
    if torch.get_num_threads() > MAX_THREADS:
        torch.set_num_threads(MAX_THREADS)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.disable_caching()
    datasets.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    transformers.set_seed(seed)


def detach_printer(trainer: transformers.Trainer) -> None:
    """Without tqdm, transformers prints every log dict to stdout; the caller gets progress."""
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    trainer.remove_callback(transformers.trainer_callback.ProgressCallback)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the libraries' advisory warnings during one training call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


# -- tokenizer and models --------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``: any string encodes, nothing is fetched."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((text for text in texts if text), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=PAD
    )


def tiny_config(tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> GPT2Config:
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "n_positions": 256,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    settings.update(overrides)
    return GPT2Config(**settings)


def new_causal_lm(tokenizer: PreTrainedTokenizerBase, seed: int) -> GPT2LMHeadModel:
    transformers.set_seed(seed)
    model = GPT2LMHeadModel(tiny_config(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def _require_dir(path: Path | None, what: str) -> Path:
    if path is None:
        raise TrainingError(f"{what} is required")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise TrainingError(f"{what} {path} is not a model directory (no config.json)")
    return path


def load_tokenizer(path: Path, what: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{what} {path} has no usable tokenizer ({exc})") from None
    if tokenizer.eos_token is None:
        raise TrainingError(f"{what} {path}: the tokenizer has no end-of-sequence token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path | None, what: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = _require_dir(path, what)
    tokenizer = load_tokenizer(path, what)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"{what} {path} is not a causal language model ({exc})") from None
    return model, tokenizer


def load_reward_model(
    path: Path | None, what: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = _require_dir(path, what)
    tokenizer = load_tokenizer(path, what)
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"{what} {path} is not a sequence classifier ({exc})") from None
    if model.config.num_labels != 1:
        raise TrainingError(f"{what} {path} has {model.config.num_labels} outputs, not one score")
    return model, tokenizer


def reward_model_from_base(
    base: Path | None, texts: Sequence[str], seed: int
) -> tuple[GPT2ForSequenceClassification, PreTrainedTokenizerBase]:
    """A one-output classifier on the base model's transformer, or a fresh tiny one."""
    transformers.set_seed(seed)
    if base is None:
        tokenizer = train_tokenizer(texts)
        model = GPT2ForSequenceClassification(tiny_config(tokenizer, num_labels=1))
        return model, tokenizer
    base = _require_dir(base, "base_model")
    tokenizer = load_tokenizer(base, "base_model")
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(base), num_labels=1, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"base_model {base} cannot start a reward model ({exc})") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def pretrain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: Sequence[str],
    *,
    steps: int,
    seed: int,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    max_length: int = 128,
    progress: Progress | None = None,
) -> float:
    """Plain next-token training on ``documents`` (each ends with EOS); returns the last loss.

    A base model that has read the kinds of answers in the data can actually write one, which
    is what makes greedy-decoding ("online") evaluation mean something.
    """
    encoded = [
        [*tokenizer(doc, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id][
            :max_length
        ]
        for doc in documents
    ]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    order: list[int] = []
    loss_value = float("nan")
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(encoded), generator=generator).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        ids, mask = _pad([encoded[i] for i in batch], tokenizer.pad_token_id)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_value = float(loss.detach())
        report(progress, (step + 1) / steps, f"base model: step {step + 1}/{steps}")
    model.eval()
    return loss_value


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


# -- progress --------------------------------------------------------------------------------


class ProgressCallback(TrainerCallback):
    """Maps the trainer's steps onto ``[start, end]`` of the caller's progress bar."""

    def __init__(self, report: Progress | None, start: float, end: float, label: str) -> None:
        self.report = report
        self.start = start
        self.end = end
        self.label = label

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.report is None:
            return
        total = max(int(state.max_steps or 0), 1)
        fraction = min(state.global_step / total, 1.0)
        self.report(
            self.start + (self.end - self.start) * fraction,
            f"{self.label}: step {state.global_step}/{total}",
        )


def report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def common_training_args(
    scratch: Path, hyper: dict[str, Any], *, logging_steps: int = 5
) -> dict[str, Any]:
    """Arguments every TRL config here gets: CPU only, no hub, no files, no reporting."""
    return {
        "output_dir": str(scratch),
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "steps",
        "logging_steps": logging_steps,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
        "push_to_hub": False,
        "seed": hyper["seed"],
        "data_seed": hyper["seed"],
        "max_steps": hyper["max_steps"],
        "per_device_train_batch_size": hyper["batch_size"],
        "learning_rate": hyper["learning_rate"],
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_length": hyper["max_length"],
    }


# -- scoring ---------------------------------------------------------------------------------


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


@torch.no_grad()
def completion_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completions: Sequence[str],
    max_length: int,
) -> list[tuple[float, int]]:
    """``(sum of token log-probs, token count)`` of each completion (with EOS) after ``prompt``.

    Tokenised exactly as TRL's DPO trainer does: prompt and prompt+completion, the completion
    starting where the two token sequences diverge.
    """
    model.eval()
    text = format_prompt(prompt)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    sequences: list[list[int]] = []
    starts: list[int] = []
    for completion in completions:
        full = tokenizer(text + completion, add_special_tokens=False)["input_ids"]
        full = [*full, tokenizer.eos_token_id][:max_length]
        starts.append(max(min(_common_prefix(prompt_ids, full), len(full) - 1), 1))
        sequences.append(full)
    ids, mask = _pad(sequences, tokenizer.pad_token_id)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    results = []
    for i, seq in enumerate(sequences):
        span = token_logps[i, starts[i] - 1 : len(seq) - 1]
        results.append((float(span.sum()), int(span.numel())))
    return results


@torch.no_grad()
def reward_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    max_length: int,
    batch_size: int = 32,
) -> list[float]:
    """The reward model's score of each ``(prompt, response)``, laid out as in training."""
    model.eval()
    scores: list[float] = []
    for offset in range(0, len(pairs), batch_size):
        batch = pairs[offset : offset + batch_size]
        sequences = [
            [
                *tokenizer(format_prompt(p) + r, add_special_tokens=False)["input_ids"],
                tokenizer.eos_token_id,
            ][:max_length]
            for p, r in batch
        ]
        ids, mask = _pad(sequences, tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        scores.extend(float(v) for v in logits[:, 0])
    return scores


@torch.no_grad()
def greedy_completion(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int
) -> str:
    """The model's own answer: greedy decoding, deterministic."""
    model.eval()
    ids = tokenizer(format_prompt(prompt), add_special_tokens=False, return_tensors="pt")
    output = model.generate(
        **ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    new = output[0, ids["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True).strip()
