"""The CPU-side parts of the vLLM engine: its options, where inputs are rendered, the prompt and
the window check. (The engine itself runs only on a GPU: tests/test_vllm_engine.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from asrd import config as config_mod
from asrd.engines import EngineUnavailable, preparer_modules
from asrd.engines.vllm_engine import VllmOptions
from asrd.engines.vllm_inputs import PromptBuilder, PromptSpec, check_window


def test_options_split_ours_from_vllm_arguments_and_refuse_unknown_render_place():
    options, rest = VllmOptions.from_extra({"render_in": "engine", "render_threads": 4,
                                            "max_num_seqs": 64, "block_size": 32})
    assert (options.render_in, options.render_threads, options.max_num_seqs) == ("engine", 4, 64)
    assert rest == {"block_size": 32}  # passed on to vLLM's engine arguments
    assert VllmOptions.from_extra({})[0].render_in == "decode"
    with pytest.raises(EngineUnavailable, match="render_in='gpu'"):
        VllmOptions.from_extra({"render_in": "gpu"})


@pytest.mark.parametrize("overrides, expected", [
    (["engine.kind=vllm"], ["asrd.engines.vllm_inputs", "vllm.renderers"]),
    (["engine.kind=vllm", "engine.extra.render_in=engine"], []),
    (["engine.kind=faster_whisper"], []),
])
def test_decode_actors_preload_vllm_only_when_they_render(overrides, expected):
    assert preparer_modules(config_mod.load(None, overrides).engine) == expected


def test_whisper_prompt_carries_the_segment_language_over_the_config():
    spec = PromptSpec("whisper", "transcribe", "", None, "en", "cpu")
    prompts = PromptBuilder(spec, tokenizer=None)  # Whisper's prompt needs no chat template
    audio = np.zeros(16000, np.float32)
    de = prompts.prompt(audio, "de", "id-1")
    assert de["decoder_prompt"] == "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"
    assert de["encoder_prompt"]["multi_modal_uuids"] == {"audio": ["id-1"]}
    assert "mm_processor_kwargs" not in de["encoder_prompt"]  # CPU features: no device kwarg
    assert "<|en|>" in prompts.prompt(audio, None, "id-2")["decoder_prompt"]


def test_window_check_refuses_what_the_model_would_cut():
    check_window(np.zeros(30 * 16000, np.float32))
    with pytest.raises(ValueError, match="longer than the model's 30 s window"):
        check_window(np.zeros(30 * 16000 + 1, np.float32), 3)
    with pytest.raises(ValueError, match="mono"):
        check_window(np.zeros((2, 16000), np.float32))
