"""Quality signals, flags and presets as pure functions (no model, no Ray)."""

from __future__ import annotations

import math
import pyarrow as pa
import pytest

from asrd import config as config_mod
from asrd.quality import hallucinations, reference, text
from asrd.quality.flags import FLAGS, Thresholds, row_flags
from asrd.quality.langid import TextLanguageId
from asrd.quality.presets import PresetError, PresetFilter, get_preset
from asrd.quality.signals import EngineSignals, SignalMaker, SignalSettings, combine

SENTENCE = "please call stella and ask her to bring these things with her from the store"


def test_text_signals_catch_a_loop_and_not_a_sentence():
    loop = " ".join([SENTENCE] * 6)
    assert text.compression_ratio(SENTENCE) < 1.5 < 2.4 < text.compression_ratio(loop)
    assert text.max_ngram_repeats(text.words(SENTENCE), 10) == 1
    assert text.max_ngram_repeats(text.words(loop), 10) == 6
    assert text.max_ngram_repeats(["a"] * 5, 10) == 0  # shorter than n
    assert text.unique_word_share(text.words("no no no no yes")) == pytest.approx(0.4)
    assert text.unique_word_share([]) is None
    assert text.longest_word(text.words("Donaudampfschifffahrtsgesellschaft, ok.")) == 34
    assert text.per_second(10, 2.0) == 5.0 and text.per_second(10, 0.0) is None
    assert text.compression_ratio("") is None


def test_hallucination_phrases_whole_text_or_long_phrase_anywhere():
    assert hallucinations.match("Thank you.", ["en"]) == "thank you"
    assert hallucinations.match("you", ["en"]) == "you"
    assert hallucinations.match("I said thank you to her", ["en"]) is None  # short: whole only
    assert hallucinations.match("Great. Thanks for watching!", ["en"]) == "thanks for watching"
    assert hallucinations.match("Untertitel im Auftrag des ZDF, 2017", ["de"]) is not None
    assert hallucinations.match("Untertitel im Auftrag des ZDF", ["en"]) is None
    assert hallucinations.match("", ["en"]) is None
    assert hallucinations.phrases("xx") == ()  # no list for this language: nothing matches


def test_reference_scores_after_whisper_normaliser():
    same = reference.score("Mr. Smith has 2 dogs!", "mister smith has two dogs", "en")
    assert same == reference.ReferenceScores(0.0, 0.0)
    wrong = reference.score("the weather is sunny", "a completely different sentence", "en")
    assert wrong.wer == 1.0
    assert reference.score("", "some words", "en") == reference.ReferenceScores(1.0, 1.0)
    assert reference.score("anything", "", "en") is None  # no reference words: no rate
    assert reference.score("Das ist gut.", "das ist gut", "de").wer == 0.0


def test_text_language_id_among_configured_languages():
    lid = TextLanguageId(["en", "de", "es", "fr"])
    assert lid.guess(SENTENCE).language == "en"
    assert lid.guess("das wetter ist heute sonnig mit einer leichten brise").language == "de"
    assert lid.guess("el tiempo hoy es soleado con una brisa ligera del oeste").language == "es"
    assert lid.guess("1234 !!") is None
    with pytest.raises(ValueError, match="'zz'"):
        TextLanguageId(["en", "zz"])


def test_engine_signals_of_a_row_weight_segments():
    a = EngineSignals(-0.2, 0.1, "en", 0.9)
    b = EngineSignals(-1.0, 0.5, "de", 0.8)
    row = combine([(a, 3.0, 30), (b, 1.0, 10)])
    assert row.avg_logprob == pytest.approx((-0.2 * 30 - 1.0 * 10) / 40)  # by characters
    assert row.no_speech_prob == pytest.approx((0.1 * 3 + 0.5 * 1) / 4)  # by seconds
    assert (row.language, row.language_p) == ("en", 0.9)  # most seconds
    assert combine([(EngineSignals(), 2.0, 5)]) == EngineSignals()


def good_signals(**over):
    s = {"num_words": 12, "compression_ratio": 1.1, "ngram_repeats": 1, "unique_word_share": 0.9,
         "longest_word": 8, "chars_per_s": 15.0, "avg_logprob": -0.3, "no_speech_prob": 0.05,
         "hallucination": None, "text_language": "en", "text_language_p": 0.95,
         "audio_language": "en", "audio_language_p": 0.9, "wer": 0.0, "cer": 0.0}
    return {**s, **over}


@pytest.mark.parametrize("over, flag", [
    ({"num_words": 0}, "empty"),
    ({"compression_ratio": 2.5}, "compression"),
    ({"ngram_repeats": 4}, "repeats"),
    ({"unique_word_share": 0.4}, "few_unique_words"),
    ({"longest_word": 25}, "long_word"),
    ({"chars_per_s": 41.0}, "too_fast"),
    ({"avg_logprob": -1.1}, "low_logprob"),
    ({"no_speech_prob": 0.61}, "no_speech"),
    ({"hallucination": "thank you"}, "hallucination"),
    ({"text_language": "de"}, "text_other_language"),
    ({"audio_language": "fr"}, "spoken_other_language"),
    ({"num_words": 3, "avg_logprob": -0.7, "audio_expected_p": 0.5}, "unsure_short_text"),
    ({"wer": 0.75}, "reference_wer"),
    ({"cer": 0.30}, "reference_cer"),
])
def test_each_flag_trips_at_its_documented_threshold(over, flag):
    t = Thresholds()
    assert row_flags(good_signals(), t, "en") == []
    assert row_flags(good_signals(**over), t, "en") == [flag]


def test_flags_that_do_not_apply_stay_off():
    t = Thresholds()
    # a short text: too few words for the unique-word share and the text language
    assert row_flags(good_signals(num_words=2, unique_word_share=0.5, text_language="de"),
                     t, "en") == []
    assert row_flags(good_signals(text_language="de", audio_language="de"), t, None) == []
    assert row_flags(good_signals(wer=None, avg_logprob=None, audio_language=None), t, "en") == []
    assert set(FLAGS) >= {"empty", "reference_wer"}


def test_signal_maker_fills_every_column_and_flags_a_wrong_reference():
    maker = SignalMaker(SignalSettings(("en", "de"), 10, Thresholds()), "en")
    s = maker.row(SENTENCE, 4.0, EngineSignals(-0.2, 0.01, "en", 0.95), SENTENCE.upper(), None)
    assert s["flags"] == [] and s["wer"] == 0.0 and s["text_language"] == "en"
    assert s["num_words"] == 15 and s["words_per_s"] == pytest.approx(15 / 4)
    wrong = maker.row(SENTENCE, 4.0, None, "the quick brown fox", "en")
    assert wrong["flags"] == ["reference_wer", "reference_cer"] and wrong["avg_logprob"] is None
    assert maker.row("", 0.0, None, None, "en")["flags"] == ["empty"]


def test_one_split_word_in_a_short_sentence_is_kept_by_default_but_not_by_strict():
    """One wrong word in an eight-word sentence is 12-25% WER but a few % CER: the default
    judges a reference by CER; `strict` adds distil-whisper's 10% WER."""
    maker = SignalMaker(SignalSettings(("en", "de"), 10, Thresholds()), "en")
    split = maker.row("She sells seashells by the sea shore.", 2.5, None,
                      "she sells sea shells by the sea shore", "en")
    assert split["wer"] >= 0.10 and split["cer"] < 0.1 and split["flags"] == []
    strict = get_preset("strict").thresholds
    assert row_flags(split, strict, "en") == ["reference_wer"]
    cut = maker.row("Speech recognition turns spoken", 1.5, None,
                    "speech recognition turns spoken words into written text", "en")
    assert "reference_cer" in cut["flags"]


def flagged_table(ok_flags: list[str]) -> pa.Table:
    """Rows as a shard file holds them: an ok row (avg log-probability -0.8, flags
    `ok_flags`), a loop, an empty row, an error row and a row written without signals."""
    rows = [{"id": "ok", **good_signals(avg_logprob=-0.8), "flags": ok_flags},
            {"id": "loop", **good_signals(compression_ratio=2.6, ngram_repeats=6),
             "flags": ["compression", "repeats"]},
            {"id": "empty", **good_signals(num_words=0), "flags": ["empty"]},
            {"id": "err", "flags": None}, {"id": "old", "flags": None}]
    return pa.Table.from_pylist(rows)


def test_preset_drops_flagged_rows_and_counts_each_flag():
    f = PresetFilter(get_preset("default"), Thresholds(), "en")
    kept = f.apply(flagged_table([]))
    assert kept.column("id").to_pylist() == ["ok", "err", "old"]  # no signals: never dropped
    summary = f.summary()
    assert {k: summary[k] for k in ("preset", "dropped_by_preset", "dropped_by_flag")} == {
        "preset": "default", "dropped_by_preset": 2,
        "dropped_by_flag": {"compression": 1, "repeats": 1, "empty": 1}}
    assert summary["quality"]["thresholds"]["min_avg_logprob"] == Thresholds().min_avg_logprob
    assert summary["quality"]["drop"] == list(FLAGS) and summary["quality"]["preset_file"] is None
    keep_all = PresetFilter(get_preset("none"), Thresholds(), "en")
    assert keep_all.apply(flagged_table([])).num_rows == 5 and keep_all.dropped == 0
    with pytest.raises(PresetError, match="unknown quality preset 'lenient'"):
        get_preset("lenient")


def test_preset_flags_again_from_the_stored_signals():
    run = Thresholds(min_avg_logprob=-0.5)  # the run flagged the ok row's -0.8 ...
    table = flagged_table(["low_logprob"])
    f = PresetFilter(get_preset("default"), run, "en")  # ... the default preset's -1.0 does not
    kept = f.apply(table)
    assert kept.column("id").to_pylist() == ["ok", "err", "old"]
    assert kept.column("flags").to_pylist() == [[], None, None]
    own = PresetFilter(get_preset("run"), run, "en")  # the run's own thresholds
    assert own.apply(table).column("id").to_pylist() == ["err", "old"]
    # flags stored by an earlier version (other names, other rules) are replaced, not trusted
    old = PresetFilter(get_preset("default"), Thresholds(), "en")
    assert old.apply(flagged_table(["audio_language"])).column("id").to_pylist() == [
        "ok", "err", "old"]


def test_merge_time_edits_apply_on_top_of_the_preset():
    f = PresetFilter(get_preset("default"), Thresholds(), "en",
                     {"min_avg_logprob": -0.7, "min_avg_logprob_short": -0.7})
    assert f.apply(flagged_table([])).column("id").to_pylist() == ["err", "old"]
    assert f.dropped_by_flag["low_logprob"] == 1
    assert f.summary()["quality"]["threshold_edits"] == {"min_avg_logprob": -0.7,
                                                         "min_avg_logprob_short": -0.7}
    with pytest.raises(PresetError, match="unknown threshold 'min_language_p'"):
        PresetFilter(get_preset("default"), Thresholds(), "en", {"min_language_p": 0.5})


def test_a_user_preset_file(tmp_path):
    path = tmp_path / "commands.yaml"
    path.write_text("description: short commands\ndrop: [empty, low_logprob]\n"
                    "thresholds: {min_avg_logprob: -0.7, language_min_words: 8}\n")
    preset = get_preset(str(path))
    assert preset.name == "commands" and preset.file == str(path.resolve())
    assert preset.drop == {"empty", "low_logprob"}
    assert preset.thresholds == Thresholds(min_avg_logprob=-0.7, language_min_words=8)
    f = PresetFilter(preset, Thresholds(), "en")
    assert f.apply(flagged_table([])).column("id").to_pylist() == ["loop", "err", "old"]
    for body, why in [("drop: [audio_language]\n", "renamed 'spoken_other_language'"),
                      ("thresholds: {min_avg_logprob: low}\n", "must be a number"),
                      ("thresholds: {language_min_words: 2.5}\n", "must be a number"),
                      ("base: none\n", "base must be one of"),
                      ("flags: [empty]\n", "unknown keys \\['flags'\\]"),
                      ("- empty\n", "must be a mapping")]:
        path.write_text(body)
        with pytest.raises(PresetError, match=why):
            get_preset(str(path))
    with pytest.raises(PresetError, match="not found"):
        get_preset(str(tmp_path / "missing.yaml"))


def test_a_nemo_manifest_text_is_indexed_as_reference(corpus, tmp_path):
    """The NeMo convention's `text` is the reference; kept as `reference` so that it does not
    collide with the output's own `text` (which would drop it from the merged dataset)."""
    import json

    import pyarrow.parquet as pq

    from asrd.index import build_index
    from asrd.schema import output_schema

    manifest = tmp_path / "nemo.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(corpus / "utt000.wav"),
                                    "text": SENTENCE, "duration": 3.0}) + "\n")
    build_index(manifest, tmp_path / "index.parquet")
    index = pq.read_table(tmp_path / "index.parquet")
    assert index.column("reference").to_pylist() == [SENTENCE]
    assert "text" not in index.column_names
    out = output_schema(index.schema)
    assert out.field("reference").type == pa.string() and out.field("text").type == pa.string()


@pytest.mark.parametrize("setting, cheap, expected", [
    (None, True, -0.5),  # faster-whisper: where the label is in doubt (a decoder step)
    (None, False, None),  # vLLM: prompt log-probabilities, request by request: never
    (True, False, math.inf), (False, True, None)])
def test_spoken_language_detection_by_default_only_where_cheap_and_in_doubt(setting, cheap,
                                                                            expected):
    from asrd.engines.base import detection_threshold

    value = "null" if setting is None else str(setting).lower()
    quality = config_mod.load(None, ["run.index=x", f"quality.audio_language={value}"]).quality
    assert quality.audio_language is setting
    assert detection_threshold(quality, cheap) == expected
    off = config_mod.load(None, ["run.index=x", "quality.enabled=false"]).quality
    assert detection_threshold(off, cheap) is None
    assert detection_threshold(None, cheap) == math.inf


def test_language_rules_hold_on_short_text():
    """Text language ID reads "Open the door." as Dutch at 0.98: below `language_min_words` it
    is not asked. Whisper's spoken language flags a row only when another language wins by a
    margin: a right but unsure detection (English at 0.64) or a near tie is no flag."""
    maker = SignalMaker(SignalSettings(("en", "de", "nl"), 10, Thresholds()), "en")
    short = maker.row("Open the door.", 1.0, EngineSignals(-0.2, 0.01, "en", 0.64, 0.64), None,
                      None)
    assert short["text_language"] == "nl" and short["text_language_p"] > 0.9
    assert short["text_expected_p"] < 0.1 and short["audio_expected_p"] == 0.64
    assert short["flags"] == []
    t = Thresholds()
    near_tie = good_signals(num_words=3, audio_language="pl", audio_language_p=0.28,
                            audio_expected_p=0.20)
    assert row_flags(near_tie, t, "en") == []
    german = good_signals(num_words=3, audio_language="de", audio_language_p=0.6,
                          audio_expected_p=0.1)
    assert row_flags(german, t, "en") == ["spoken_other_language"]
    # a shard file written before the expected language's probability was stored: its bound
    old = good_signals(num_words=3, audio_language="de", audio_language_p=0.55)
    assert row_flags(old, t, "en") == [] and row_flags({**old, "audio_language_p": 0.7}, t,
                                                       "en") == ["spoken_other_language"]
    # a long text read as another language by a wide margin is still flagged
    long_german = maker.row("das wetter ist heute sonnig mit einer leichten brise", 3.0,
                            None, None, "en")
    assert long_german["flags"] == ["text_other_language"]


def test_a_short_text_is_unsure_only_where_words_and_spoken_language_both_are():
    """Another language transcribed as English ("Komm bitte her." -> "Come be to here.") has
    a middling log-probability and a low probability of English; a right short label has at
    most one of the two ("Mount Everest.": English at 0.23 but -0.58; "Page 12.": -0.66 but
    English at 0.87)."""
    t = Thresholds()
    short = dict(num_words=4, audio_language="en")
    assert row_flags(good_signals(**short, avg_logprob=-0.68, audio_language_p=0.26,
                                  audio_expected_p=0.26), t, "en") == ["unsure_short_text"]
    assert row_flags(good_signals(**short, avg_logprob=-0.58, audio_language_p=0.23), t,
                     "en") == []
    assert row_flags(good_signals(**short, avg_logprob=-0.66, audio_language_p=0.87), t,
                     "en") == []
    # a long text, or one whose spoken language was never detected, is judged otherwise
    assert row_flags(good_signals(num_words=6, avg_logprob=-0.7, audio_expected_p=0.2), t,
                     "en") == []
    assert row_flags(good_signals(num_words=3, avg_logprob=-0.7, audio_language=None,
                                  audio_language_p=None), t, "en") == []


def test_low_logprob_floor_depends_on_length():
    """A mean log-probability over a few tokens is noisy: a text of fewer than
    `short_text_words` words is judged by `min_avg_logprob_short`."""
    t = Thresholds(min_avg_logprob=-1.0, min_avg_logprob_short=-1.5, short_text_words=6)
    assert row_flags(good_signals(num_words=3, avg_logprob=-1.2), t, "en") == []
    assert row_flags(good_signals(num_words=3, avg_logprob=-1.6), t, "en") == ["low_logprob"]
    assert row_flags(good_signals(num_words=6, avg_logprob=-1.2), t, "en") == ["low_logprob"]


def test_old_config_with_a_retired_threshold_still_loads(tmp_path):
    """A run directory's frozen config.yaml holds every key of its version, including the
    language-probability floor the margins replaced."""
    frozen = tmp_path / "config.yaml"
    frozen.write_text("run: {index: x}\nquality: {thresholds: {min_language_p: 0.7}}\n")
    cfg = config_mod.load(frozen)
    assert "min_language_p" not in cfg.quality.thresholds
