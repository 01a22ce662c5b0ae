"""The LLM judge on CPU with a tiny random Qwen2 chat model (asrd.testing.tiny_models, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrd import config as asrd_config
from asrd.config import ConfigError
from asrd.engines import EngineUnavailable
from asrd.engines.judge import NO_TRANSCRIPT, build_judge, render_chat
from asrd.engines.prompts import judge_messages
from asrd.testing.tiny_models import TextLMSize, build_text_lm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "uh uh uh uh",
         "seven eight nine ten", "please call stella and ask her to bring these things"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The CI machine has 2 shared cores: torch's spinning threads cost 5x under contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return build_text_lm(tmp_path_factory.mktemp("tiny-lm"))


def judge_cfg(model, **overrides):
    items = ["judge.enabled=true", "judge.kind=transformers", f"judge.model={model}",
             "judge.batch_size=3"] + [f"judge.{k}={v}" for k, v in overrides.items()]
    return asrd_config.load(overrides=items).judge


@pytest.fixture(scope="module")
def judge(lm_dir):
    j = build_judge(judge_cfg(lm_dir))
    yield j
    j.close()


def test_every_score_is_a_choice_and_batching_changes_nothing(judge):
    results = judge.score(TEXTS)
    assert len(results) == len(TEXTS)
    for score, error in results:
        assert error is None
        assert score in {1.0, 2.0, 3.0, 4.0, 5.0}
    # The tiny model's answer depends on the text, so a reordering would show.
    assert len({score for score, _ in results}) > 1
    assert [judge.score([t])[0] for t in TEXTS] == results
    assert judge.score(TEXTS[::-1]) == results[::-1]


def test_empty_transcripts_are_errors_not_scores(judge):
    results = judge.score(["", None, "  \n", TEXTS[0]])
    assert results[:3] == [(None, NO_TRANSCRIPT)] * 3
    assert results[3] == judge.score([TEXTS[0]])[0]
    assert judge.score([]) == []


def test_score_is_the_models_best_choice(judge, lm_dir):
    """Cross-check against transformers' own generate: its first-step logits, restricted to the
    choice tokens, pick the same answer."""
    tok = transformers.AutoTokenizer.from_pretrained(lm_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    cfg = judge_cfg(lm_dir)
    choice_ids = [tok(c, add_special_tokens=False)["input_ids"][0] for c in cfg.choices]
    for text in TEXTS[:3]:
        prompt = render_chat(tok, judge_messages(cfg.system_prompt, cfg.user_template, text))
        assert text in prompt and prompt.endswith("<|im_start|>assistant\n")
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=1, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
        best = int(out.scores[0][0, choice_ids].argmax())
        assert judge.score([text]) == [(float(cfg.choices[best]), None)]


def test_long_transcripts_are_cut_not_failed(lm_dir):
    j = build_judge(judge_cfg(lm_dir, max_text_chars=50))
    long_text = "word " * 2000
    assert j.score([long_text]) == j.score([long_text[:50]])


def test_bad_judge_configs_are_clear_errors(lm_dir, tmp_path):
    with pytest.raises(EngineUnavailable, match="not a local model directory"):
        build_judge(judge_cfg(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"must contain \{text\}"):
        build_judge(judge_cfg(lm_dir, user_template="'Rate it.'"))
    with pytest.raises(ConfigError, match="must be a number"):
        build_judge(judge_cfg(lm_dir, choices="[good,bad]"))
    with pytest.raises(ConfigError, match="two or more distinct"):
        build_judge(judge_cfg(lm_dir, choices="[1,1]"))
    with pytest.raises(ConfigError, match="'12345' is .* tokens"):
        build_judge(judge_cfg(lm_dir, choices="[1,12345]"))
    with pytest.raises(ConfigError, match="judge.kind='llama'"):
        build_judge(judge_cfg(lm_dir, kind="llama"))


@pytest.mark.gpu
def test_vllm_judge_answers_with_a_choice(tmp_path):
    pytest.importorskip("vllm")
    # head_dim 64: a size every vLLM attention backend takes.
    lm = build_text_lm(tmp_path / "lm", TextLMSize(hidden_size=128, heads=2, kv_heads=2,
                                                   intermediate_size=256))
    cfg = judge_cfg(lm, kind="vllm", **{"vllm.max_model_len": 512, "vllm.enforce_eager": "true",
                                        "max_text_chars": 100000})
    j = build_judge(cfg)
    try:
        too_long = "word " * 2000  # longer than max_model_len: fails alone, with its reason
        results = j.score(TEXTS + ["", too_long])
        assert len(results) == len(TEXTS) + 2
        for score, error in results[:len(TEXTS)]:
            assert error is None and score in {1.0, 2.0, 3.0, 4.0, 5.0}
        assert results[len(TEXTS)] == (None, NO_TRANSCRIPT)
        assert results[-1][0] is None and results[-1][1].startswith("judge failed")
    finally:
        j.close()
