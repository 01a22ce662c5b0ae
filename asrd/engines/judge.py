"""The LLM judge: a text LLM rates each transcript with one of a few allowed answers ("1".."5").

Why constrained: a free-running LLM answers "I'd say 4 out of 5" or "Score: four"; parsing that
loses rows. Here the answer is always exactly one of `judge.choices`: the transformers judge
compares the next-token scores of the choice tokens (one forward pass, no generation), the vLLM
judge decodes under a structured-output choice constraint. The choice becomes the float `score`;
a row that could not be scored gets `score=None` and a reason in `judge_error`, never a guess.

The prompt is the config's system prompt and user template (`{text}` marks the transcript),
rendered with the judge model's chat template (asrd.engines.prompts.judge_messages).
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from asrd.config import ConfigError
from asrd.engines.base import EngineUnavailable
from asrd.engines.prompts import Message, check_judge_template, judge_messages

NO_TRANSCRIPT = "no transcript"

ScoreResult = tuple[float | None, str | None]  # (score, judge_error): exactly one is None


class Judge(ABC):
    """Scores transcripts; `score` returns one (score, error) per text, in order."""

    def __init__(self, cfg: DictConfig):
        self._cfg = cfg
        check_judge_template(cfg.user_template)
        self.choices = [str(c) for c in cfg.choices]
        self.values = _choice_values(self.choices)
        # Longer transcripts (a long recording is one row) are judged on their first
        # characters, so that one row cannot exceed the judge's context.
        self._max_chars = int(cfg.max_text_chars)

    @property
    def name(self) -> str:
        return str(self._cfg.model)

    def score(self, texts: list[str | None]) -> list[ScoreResult]:
        results: list[ScoreResult] = [(None, NO_TRANSCRIPT)] * len(texts)
        todo = [i for i, t in enumerate(texts) if t is not None and t.strip()]
        size = int(self._cfg.batch_size)
        for start in range(0, len(todo), size):
            idx = todo[start:start + size]
            for i, result in zip(idx, self._score_batch([texts[i] for i in idx]), strict=True):
                results[i] = result
        return results

    @abstractmethod
    def close(self) -> None:
        """Release the model (GPU memory, engine processes). Called once at task end."""

    def _score_batch(self, texts: list[str]) -> list[ScoreResult]:
        """A failed batch is retried one by one, so one bad row costs only its own score."""
        chats = [judge_messages(self._cfg.system_prompt, self._cfg.user_template,
                                t.strip()[:self._max_chars]) for t in texts]
        try:
            picks = self._choose(chats)
        except Exception as e:  # noqa: BLE001 - recorded per row as judge_error
            if len(chats) == 1:
                return [(None, f"judge failed: {type(e).__name__}: {e}")]
            return [r for t in texts for r in self._score_batch([t])]
        return [(self.values[p], None) for p in picks]

    @abstractmethod
    def _choose(self, chats: list[list[Message]]) -> list[int]:
        """The index in `self.choices` of the answer to each chat."""


class TransformersJudge(Judge):
    """A causal LM through transformers (CPU or GPU): the choice with the highest next-token
    logit after the rendered prompt wins, so every answer is one of the choices."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        model_dir = _local_model_dir(cfg.model)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise EngineUnavailable(f"the transformers judge needs torch and transformers ({e}): "
                                    f"pip install 'asrd[transformers]'") from e
        if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailable(f"judge.device={cfg.device!r} but torch sees no CUDA GPU")
        self._torch = torch
        self._device = torch.device(str(cfg.device))
        try:
            tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise EngineUnavailable(f"cannot load the judge model from {model_dir}: {e}") from e
        tok.padding_side = "left"  # the last position of every row is its prompt's end
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._tok = tok
        self._model = model.to(self._device).eval()
        self._choice_ids = _single_token_ids(tok, self.choices)

    def close(self) -> None:
        del self._model
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _choose(self, chats: list[list[Message]]) -> list[int]:
        enc = self._tok([render_chat(self._tok, c) for c in chats], return_tensors="pt",
                        padding=True, add_special_tokens=False).to(self._device)
        # Positions counted from each row's first real token, as generate() does under left
        # padding, so that a row scores the same alone or in a batch.
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with self._torch.inference_mode():
            logits = self._model(**enc, position_ids=positions).logits[:, -1, :]
        return logits[:, self._choice_ids].argmax(-1).tolist()


class VllmJudge(Judge):
    """A text LLM through vLLM on GPU, decoding under a structured-output choice constraint
    (`StructuredOutputsParams(choice=...)`, greedy), sized by judge.vllm.*. `vllm.LLM` is not
    thread-safe: one call at a time per judge."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        model_dir = _local_model_dir(cfg.model)
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as e:
            raise EngineUnavailable(f"the vLLM judge needs vllm on a GPU node ({e}): "
                                    f"pip install 'asrd[gpu]'") from e
        options: dict[str, Any] = {"enforce_eager": bool(cfg.vllm.enforce_eager),
                                   "dtype": str(cfg.vllm.dtype),
                                   "load_format": str(cfg.vllm.load_format)}
        if cfg.vllm.max_model_len:
            options["max_model_len"] = int(cfg.vllm.max_model_len)
        self._llm = LLM(model=str(model_dir), gpu_memory_utilization=cfg.gpu_memory_utilization,
                        **options)
        self._tok = self._llm.get_tokenizer()
        longest = max(len(self._tok.encode(c, add_special_tokens=False)) for c in self.choices)
        self._params = SamplingParams(
            temperature=0.0, max_tokens=longest + 1,
            structured_outputs=StructuredOutputsParams(choice=self.choices))

    def close(self) -> None:
        llm, self._llm = self._llm, None
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        shutdown = getattr(llm, "shutdown", None) or getattr(engine_core, "shutdown", None)
        if shutdown is not None:
            shutdown()
        del llm
        gc.collect()

    def _choose(self, chats: list[list[Message]]) -> list[int]:
        # Token ids, not text: vLLM would add the tokenizer's special tokens a second time to
        # a prompt whose chat template already has them.
        prompts = [{"prompt_token_ids": self._tok.encode(render_chat(self._tok, c),
                                                         add_special_tokens=False)}
                   for c in chats]
        outputs = self._llm.generate(prompts, self._params, use_tqdm=False)
        return [self._choice_index(o.outputs[0].text) for o in outputs]

    def _choice_index(self, answer: str) -> int:
        try:
            return self.choices.index(answer.strip())
        except ValueError:
            raise ValueError(f"answer {answer!r} is not one of {self.choices}") from None


def build_judge(judge_cfg: DictConfig) -> Judge:
    """The judge the config names (call it only when judge.enabled); imports lazily."""
    if judge_cfg.kind == "transformers":
        return TransformersJudge(judge_cfg)
    if judge_cfg.kind == "vllm":
        return VllmJudge(judge_cfg)
    raise ConfigError(f"invalid config value judge.kind={judge_cfg.kind!r}: must be one of "
                      f"('transformers', 'vllm')")


def render_chat(tokenizer, chat: list[Message]) -> str:
    """The chat through the model's chat template; a model without one (a base LM) gets the
    turns' texts one after another, each on its own paragraph."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in chat) + "\n"


def _choice_values(choices: list[str]) -> list[float]:
    if len(choices) < 2 or len(set(choices)) != len(choices):
        raise ConfigError(f"invalid config value judge.choices={choices}: need two or more "
                          f"distinct answers")
    try:
        return [float(c) for c in choices]
    except ValueError:
        raise ConfigError(f"invalid config value judge.choices={choices}: every answer must be "
                          f"a number (it is stored as the float column `score`)") from None


def _single_token_ids(tokenizer, choices: list[str]) -> list[int]:
    ids = []
    for choice in choices:
        tokens = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ConfigError(
                f"invalid config value judge.choices: {choice!r} is {len(tokens)} tokens for "
                f"this tokenizer; the transformers judge compares next-token scores, so each "
                f"answer must be one token (use the vllm judge for longer answers)")
        ids.append(tokens[0])
    return ids


def _local_model_dir(model: str) -> Path:
    path = Path(model).expanduser() if model else None
    if path is None or not (path / "config.json").is_file():
        raise EngineUnavailable(
            f"judge.model={model!r} is not a local model directory with a config.json: the "
            f"judge needs a text LLM checkpoint on disk (e.g. `hf download ORG/MODEL "
            f"--local-dir DIR` on a machine with network); nothing is downloaded at run time")
    return path
