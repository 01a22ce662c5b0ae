"""A diarising model's speaker turns (MOSS transcribe-diarize writes them inline in its text):
parsed into the `speaker_turns` column with a strict grammar that keeps every word of malformed
output in the text, and carried onto the row's time base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from asrd.engines.base import Hypothesis, SpeakerTurn
from asrd.engines.vllm_transcription import speaker_turns
from asrd.export.items import window_items, window_schema
from asrd.export.source import FLAC_RATE, SourceRow
from asrd.filters import RowFilter
from asrd.runtime.partial import PartialRows, SegmentDone
from asrd.runtime.records import Decoded, IndexRow
from asrd.runtime.rows import RowAssembly
from asrd.schema import output_schema
from asrd.testing import speech_models

PUBLISHED = "[0.48][S01]Welcome.[1.66][1.70][S02]Thanks for having me.[3.20]"


def test_the_published_example_is_two_turns_and_a_readable_text():
    said = speaker_turns(PUBLISHED)
    assert said.speaker_turns == (SpeakerTurn("S01", 0.48, 1.66, "Welcome."),
                                  SpeakerTurn("S02", 1.70, 3.20, "Thanks for having me."))
    assert said.text == "Welcome. Thanks for having me."
    assert said.language is None


def test_a_turn_without_an_end_takes_the_next_start_and_the_last_stays_open():
    said = speaker_turns("[0.0][S01]One two[2.5][S02]three four")
    assert said.speaker_turns == (SpeakerTurn("S01", 0.0, 2.5, "One two"),
                                  SpeakerTurn("S02", 2.5, None, "three four"))
    assert said.text == "One two three four"


def test_stray_brackets_and_text_before_the_first_turn_stay_in_the_text():
    said = speaker_turns("Hello there [0.5][S01]I [laughs] agree [S2] yes.[1.9] [2]")
    assert said.speaker_turns == (SpeakerTurn("S01", 0.5, 1.9, "I [laughs] agree [S2] yes."),)
    assert said.text == "Hello there I [laughs] agree [S2] yes. [2]"


def test_a_timestamp_without_a_speaker_is_text_not_a_turn():
    said = speaker_turns("[0.48][S01]Hi.[1.0][1.2]Bye now.[2.0]")
    assert said.speaker_turns == (SpeakerTurn("S01", 0.48, 1.0, "Hi."),)
    assert said.text == "Hi. [1.2]Bye now.[2.0]"
    alone = speaker_turns("[0.5]no speaker at all[1.5]")
    assert alone.speaker_turns == () and alone.text == "[0.5]no speaker at all[1.5]"


def test_output_without_any_tag_is_all_text_and_no_turns():
    said = speaker_turns("  just words  ")
    assert (said.text, said.speaker_turns) == ("just words", ())


# --- from the engine's output to the row, its committed segments and its training windows --

INDEX = pa.schema([("id", pa.string()), ("path", pa.string()), ("duration_s", pa.float64())])


def _row(raws: list[str | None], spans: list[tuple[float, float]]) -> dict:
    """The output row of one recording whose engine inputs (`spans`) said `raws` (None: a
    model without turns, which says "plain"), through the runtime's row assembly."""
    index_row = IndexRow.of({"row": 0, "id": "talk", "path": "talk.wav", "duration_s": 40.0})
    assembly = RowAssembly()
    assert assembly.start(index_row, Decoded(0, spans=spans, duration_s=40.0)) is None
    result = None
    for k, raw in enumerate(raws):
        said = Hypothesis("plain") if raw is None else speaker_turns(raw).on(Hypothesis(""))
        result = assembly.text(0, k, said, 1.0)
    assert result is not None and result.ok
    out = result.output("moss", "vllm", judged=False)
    # the shard file's schema takes the row as it is written
    return pa.Table.from_pylist([out], schema=output_schema(INDEX)).to_pylist()[0]


def test_turns_are_on_the_recordings_time_base_and_the_text_is_readable():
    row = _row([PUBLISHED, "[0.5][S01]And a second input."], [(0.0, 30.0), (30.0, 38.0)])
    assert row["speaker_turns"] == [
        {"speaker": "S01", "start_s": 0.48, "end_s": 1.66, "text": "Welcome."},
        {"speaker": "S02", "start_s": 1.70, "end_s": 3.20, "text": "Thanks for having me."},
        # the second input's own S01 (tags name speakers within one input), left open by the
        # model: it ends where its input ends
        {"speaker": "S01", "start_s": 30.5, "end_s": 38.0, "text": "And a second input."}]
    assert row["text"] == "Welcome. Thanks for having me. And a second input."
    assert [s["text"] for s in row["segments"]] == ["Welcome. Thanks for having me.",
                                                    "And a second input."]


def test_a_model_without_turns_leaves_the_column_null():
    assert _row([None], [(0.0, 5.0)])["speaker_turns"] is None


def test_committed_segments_keep_their_turns_for_a_resume(tmp_path):
    turns = speaker_turns(PUBLISHED).speaker_turns
    partial = PartialRows(tmp_path / "shard-000000.partial", "aaa", every_s=1.0)
    partial.add(SegmentDone(0, "talk", 0, 0.0, 30.0, "Welcome. Thanks for having me.", 0.1,
                            turns))
    partial.add(SegmentDone(0, "talk", 1, 30.0, 40.0, "plain", 0.1))
    partial.commit()
    again = PartialRows(tmp_path / "shard-000000.partial", "aaa", every_s=1.0)
    assert [s.speaker_turns for s in again.committed(0, "talk").values()] == [turns, None]


def test_a_training_window_holds_the_turns_that_start_in_it():
    columns = {"id": "talk", "text": "...", "duration_s": 40.0, "speaker_turns": [
        {"speaker": "S01", "start_s": 0.5, "end_s": 3.0, "text": "one"},
        {"speaker": "S02", "start_s": 31.0, "end_s": 34.0, "text": "two"}],
        "segments": [{"start": 0.0, "end": 5.0, "text": "one"},
                     {"start": 30.0, "end": 35.0, "text": "two"}]}
    row = SourceRow(columns, samples=np.zeros(40 * FLAC_RATE, np.float32))
    windows, too_long = window_items(row, 30.0)
    assert too_long == 0 and [w.columns["speaker_turns"] for w in windows] == [
        [{"speaker": "S01", "start_s": 0.5, "end_s": 3.0, "text": "one"}],
        [{"speaker": "S02", "start_s": 1.0, "end_s": 4.0, "text": "two"}]]
    schema = window_schema(output_schema(INDEX))
    pa.Table.from_pylist([w.columns for w in windows], schema=schema)  # the export's schema


def test_merge_filters_can_select_rows_by_their_turns():
    schema = output_schema(INDEX)
    turn = {"speaker": "S01", "start_s": 0.0, "end_s": 1.0, "text": "x"}
    rows = pa.Table.from_pylist([
        {"id": "two", "speaker_turns": [turn, {**turn, "speaker": "S02"}]},
        {"id": "one", "speaker_turns": [turn]}, {"id": "other model", "speaker_turns": None}],
        schema=schema)
    row_filter = RowFilter(["array_length(speaker_turns) >= 2"])
    row_filter.check(schema)
    kept, _ = row_filter.apply(rows)
    assert kept.column("id").to_pylist() == ["two"]


def _moss_folder(out: Path) -> Path:
    """A MOSS transcribe-diarize folder: transformers' config defaults, its processor and the
    Whisper BPE with MOSS's special tokens. Enough for vLLM's class to give its transcription
    config and clean its output; its inputs cannot be rendered (asrd.testing.speech_models
    says why), so the engine cannot run on it."""
    from transformers import (MossTranscribeDiarizeConfig, MossTranscribeDiarizeFeatureExtractor,
                              MossTranscribeDiarizeProcessor)

    tokens = ["<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>"]
    tok = speech_models._tokenizer(tokens, {}, "", eos="<|im_end|>")
    config = MossTranscribeDiarizeConfig().to_dict()
    config["architectures"] = ["MossTranscribeDiarizeForConditionalGeneration"]
    folder = speech_models._write(out, config, tok, {})
    MossTranscribeDiarizeProcessor(MossTranscribeDiarizeFeatureExtractor(), tok).save_pretrained(
        folder)
    return folder


def test_the_moss_class_output_becomes_turns_in_the_engines_hypothesis(tmp_path):
    """What the engine does with a request's output (VllmEngine._said): the model's class
    cleans it, asrd parses the turns onto the hypothesis. Needs vLLM's Python code."""
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from vllm.config import ModelConfig

    from asrd.engines.vllm_transcription import TranscriptionPrompts, TranscriptionSpec

    folder = str(_moss_folder(tmp_path / "moss"))
    prompts = TranscriptionPrompts(TranscriptionSpec("transcribe", None, ""), ModelConfig(
        model=folder, tokenizer=folder, mm_processor_cache_gb=0, limit_mm_per_prompt={"audio": 1}))
    said = prompts.text(f"  {PUBLISHED}\n").on(Hypothesis("", avg_logprob=-0.2))
    assert said == Hypothesis("Welcome. Thanks for having me.", avg_logprob=-0.2,
                              speaker_turns=speaker_turns(PUBLISHED).speaker_turns)
    assert len(said.speaker_turns) == 2
