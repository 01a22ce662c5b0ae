"""A diarising model's speaker turns (MOSS transcribe-diarize writes them inline in its text):
parsed into the `speaker_turns` column with a strict grammar that keeps every word of malformed
output in the text, and carried onto the row's time base."""

from __future__ import annotations

from asrd.engines.base import SpeakerTurn
from asrd.engines.vllm_transcription import speaker_turns

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
