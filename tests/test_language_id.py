"""The language-ID pass: identifying each segment's spoken language before the engine, routing
it (the engine transcribes in that language), its columns and flags. Real faster-whisper
Whisper-base on the CPU, on espeak-ng speech in English, German, Spanish and French."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrd import config as config_mod
from asrd.config import ConfigError
from asrd.engines.base import EngineUnavailable, Hypothesis, Segment
from asrd.engines.language_id import (EngineIdentifier, LanguageRoutingEngine, Routing,
                                      SpokenLanguage, WhisperDetector, build_run_engine,
                                      identifier_engine_config, spoken_of)
from asrd.engines.registry import build_engine, engine_packs
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan
from asrd.quality.flags import FLAGS, LanguageRule, Thresholds, row_flags
from asrd.quality.langid import text_language_id
from asrd.runtime.task import run_task
from asrd.speech_samples import make_language_set
from tests.conftest import make_cfg
from tests.runs import assert_exactly_once, shard_rows

ON = ["language_id.enabled=true", "language_id.languages=[en,es,fr]", "language_id.min_p=0.3"]


def test_routing_takes_a_sure_language_and_leaves_an_unsure_one():
    routing = Routing(0.5, "en")
    assert routing.route(SpokenLanguage("de", 0.9)) == "de"  # routed, wanted or not
    assert routing.route(SpokenLanguage("de", 0.4)) is None  # unsure: engine.language
    assert routing.route(SpokenLanguage("de", None)) == "de"  # a label without probability
    assert routing.route(None) is None
    spoken = SpokenLanguage("de", 0.7, (("de", 0.7), ("en", 0.2)))
    assert spoken.p_of("DE") == 0.7 and spoken.p_of("en") == 0.2 and spoken.p_of("fr") == 0.0
    assert SpokenLanguage("de", 0.7).p_of("en") is None and spoken.p_of(None) is None


def test_flags_of_the_pass_fire_only_when_it_ran():
    rule = LanguageRule(frozenset({"en", "es"}), 0.5)
    row = {"num_words": 8, "audio_language": "de", "audio_language_p": 0.9,
           "audio_expected_p": 0.9}
    assert row_flags(row, Thresholds(), "de", rule) == ["unwanted_language"]
    assert row_flags(row, Thresholds(), "de") == []  # no pass: no such flag
    unsure = {**row, "audio_language": "es", "audio_language_p": 0.3, "audio_expected_p": 0.3}
    assert row_flags(unsure, Thresholds(), "es", rule) == ["unsure_language"]
    assert row_flags(row, Thresholds(), "de", LanguageRule(frozenset(), 0.5)) == []  # any
    assert FLAGS[-2:] == ("unwanted_language", "unsure_language")
    cfg = config_mod.load(None, ["run.index=x", *ON])
    assert LanguageRule.of(cfg.language_id) == LanguageRule(frozenset({"en", "es", "fr"}), 0.3)
    assert LanguageRule.of(config_mod.load(None, ["run.index=x"]).language_id) is None


def test_config_refuses_a_bad_pass_and_turns_packing_off():
    with pytest.raises(ConfigError, match="language_id.min_p"):
        config_mod.load(None, ["run.index=x", "language_id.min_p=1.5"])
    with pytest.raises(ConfigError, match="language_id.kind"):
        config_mod.load(None, ["run.index=x", "language_id.kind=lingua"])
    with pytest.raises(ConfigError, match="language_id.gpu_memory_utilization"):
        config_mod.load(None, ["run.index=x", *ON, "language_id.kind=vllm",
                               "engine.gpu_memory_utilization=0.9"])
    config_mod.load(None, ["run.index=x", *ON, "language_id.kind=vllm",
                           "engine.gpu_memory_utilization=0.8"])
    assert engine_packs(config_mod.load(None, ["run.index=x"]))
    assert not engine_packs(config_mod.load(None, ["run.index=x", *ON]))
    on = config_mod.load(None, ["run.index=x", *ON])
    ident = identifier_engine_config(on.engine, on.language_id)
    assert ident.language is None and ident.max_new_tokens == 1 and ident.vllm.render_in == "engine"
    from asrd.cli import check_engine

    check_engine(on, packages=True)  # the bundled Whisper-base is there
    missing = config_mod.load(None, ["run.index=x", *ON, "language_id.model=/nonexistent"])
    with pytest.raises(EngineUnavailable, match="/nonexistent"):
        check_engine(missing, packages=True)
    assert config_mod.is_output_key("language_id.min_p")
    assert not config_mod.is_output_key("language_id.gpu_memory_utilization")


def test_vllm_whisper_identifier_asks_for_the_language_token_and_reads_it():
    """On the CPU, vLLM's path through the same seam: the identifier's Whisper prompt stops at
    <|startoftranscript|> (what Whisper writes next is the language), and its first output
    token, with its log-probability, is the segment's spoken language; FireRedLID's label
    (no probability) is routed."""
    from asrd.engines.vllm_inputs import PromptBuilder, PromptSpec
    from asrd.engines.vllm_signals import WhisperTokens, hypothesis
    from tests.test_vllm_inputs import Completion, Logprob, RequestOutput, _whisper_tokenizer

    cfg = config_mod.load(None, ["run.index=x", *ON, "language_id.kind=vllm",
                                 "engine.gpu_memory_utilization=0.8"])
    ident = identifier_engine_config(cfg.engine, cfg.language_id)
    prompts = PromptBuilder(PromptSpec.from_engine_cfg("whisper", ident, "cpu"), tokenizer=None)
    assert prompts.prompt(np.zeros(16000, np.float32), None, "a")["decoder_prompt"] == (
        "<|startoftranscript|>")
    tok = _whisper_tokenizer()
    de = tok.convert_tokens_to_ids("<|de|>")
    out = RequestOutput([tok.convert_tokens_to_ids("<|startoftranscript|>")], None,
                        [Completion([de], [{de: Logprob(math.log(0.8), 1)}])])
    spoken = spoken_of(hypothesis(out, "", WhisperTokens.of(tok)))
    assert spoken.language == "de" and spoken.p == pytest.approx(0.8)
    routing = Routing.of(cfg.language_id, cfg.engine.language)
    assert routing.route(spoken) == "de"
    fire_red = spoken_of(Hypothesis("", language="de"))  # vllm_transcription's label
    assert fire_red == SpokenLanguage("de", None) and routing.route(fire_red) == "de"


@pytest.fixture(scope="module")
def language_set(tmp_path_factory) -> Path:
    """Two sentences in each of en, de, es, fr (espeak-ng), and its manifest."""
    return make_language_set(tmp_path_factory.mktemp("languages"), per_language=2)


def _segments(manifest: Path) -> tuple[list[Segment], list[str]]:
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    audio = [sf.read(manifest.parent / r["path"], dtype="float32")[0] for r in rows]
    return ([Segment(a, None, id=r["id"]) for a, r in zip(audio, rows)],
            [r["spoken"] for r in rows])


def _count_encoder_passes(model) -> list[int]:
    """Count the real encoder passes of a faster-whisper model that keeps its last encoder
    output: a class between its own and WhisperModel's in the method order sees each pass the
    kept output did not spare."""
    passes: list[int] = []

    class Passes(type(model).__mro__[1]):  # WhisperModel
        def encode(self, features):
            passes.append(1)
            return super().encode(features)

    model.__class__ = type("Counted", (type(model), Passes), {})
    return passes


def test_the_engine_transcribes_in_the_identified_language(language_set):
    cfg = config_mod.load(None, ["run.index=x", *ON])
    engine = build_run_engine(cfg.engine, cfg.quality, cfg.language_id)
    try:
        assert isinstance(engine, LanguageRoutingEngine)
        assert isinstance(engine.identifier, WhisperDetector)
        assert engine.identifier.model is engine.inner.model  # the same Whisper-base: shared
        assert engine.input_preparer() is None  # faster-whisper takes the raw audio
        segments, spoken = _segments(language_set)
        german, spanish = (segments[spoken.index(lang)] for lang in ("de", "es"))
        forced = Segment(german.audio, "en", id="forced")  # the index's language stands
        passes = _count_encoder_passes(engine.inner.model)
        got = engine.hypotheses([german, spanish, forced])
    finally:
        engine.close()
    assert passes == [1, 1, 1]  # one encoder pass a segment: detection and transcription
    lingua = text_language_id(("en", "de", "es", "fr"))
    for h, lang in zip(got, ("de", "es")):
        assert h.language == lang and h.routed_language == lang and h.language_p >= 0.3
        assert h.expected_language_p == h.language_p  # expected: the routed language
        assert lingua.guess(h.text).language == lang, h.text  # transcribed in it
    last = got[-1]
    assert last.language == "de" and last.routed_language is None
    assert last.expected_language_p < 0.2  # the probability of English, the forced language


def test_any_engine_that_states_the_language_is_an_identifier(language_set):
    """The seam the vLLM identifiers take (Whisper's language token, FireRedLID's label): an
    asrd engine's hypotheses with no forced language, here faster-whisper's."""
    cfg = config_mod.load(None, ["run.index=x", "engine.language=null"])
    identifier = EngineIdentifier(build_engine(cfg.engine, cfg.quality))
    try:
        segments, spoken = _segments(language_set)
        found = identifier.identify(segments[::2])
    finally:
        identifier.close()
    right = [f is not None and f.language == lang for f, lang in zip(found, spoken[::2])]
    assert sum(right) >= 3, list(zip(found, spoken[::2]))


@pytest.mark.slow
def test_a_mixed_language_run_routes_flags_and_writes_every_row_once(language_set, tmp_path):
    """A run over en/de/es/fr speech wanting en, es, fr: each row's language is identified and
    written, its text is in that language, German is flagged unwanted, a row whose index gives
    a language keeps it (and is judged by its detection), a corrupt file is an error row; the
    merge's preset drops by the flags."""
    rows = [json.loads(x) for x in language_set.read_text().splitlines()]
    for r in rows:
        r["path"] = str(language_set.parent / r["path"])
    german = next(r for r in rows if r["spoken"] == "de")
    rows.append({**german, "id": "forced-en", "language": "en"})
    (tmp_path / "broken.flac").write_bytes(b"not audio at all" * 100)
    rows.append({"id": "broken", "path": str(tmp_path / "broken.flac"), "reference": "",
                 "spoken": "en"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    build_index(manifest, tmp_path / "index.parquet")
    cfg = make_cfg(tmp_path / "index.parquet", tmp_path / "run", "run.num_shards=1", *ON)
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]

    assert_exactly_once(rd.path, len(rows))
    out = {r["id"]: r for r in shard_rows(rd.path)}
    assert out["broken"]["error"] and out["broken"]["language"] is None
    routed = [r for r in out.values() if r["id"] not in ("broken", "forced-en")]
    right = [r for r in routed if r["audio_language"] == r["spoken"]]
    assert len(right) >= 6, [(r["spoken"], r["audio_language"], r["audio_language_p"])
                             for r in routed]
    for r in routed:
        if r["audio_language_p"] >= 0.3:  # routed: written, and unwanted where not wanted
            assert r["language"] == r["audio_language"], r
            assert ("unwanted_language" in r["flags"]) == (
                r["audio_language"] not in ("en", "es", "fr")), r
            assert "spoken_other_language" not in r["flags"]
        else:  # unsure: transcribed in engine.language, no language written
            assert r["language"] is None and "unsure_language" in r["flags"], r
    for r in right:  # the engine got the identified language: its text is in it
        if r["language"]:
            assert r["text_language"] == r["spoken"], r
    assert any("unwanted_language" in r["flags"] for r in right if r["spoken"] == "de")
    forced = out["forced-en"]
    assert forced["language"] == "en" and forced["audio_language"] == "de"
    assert "unwanted_language" in forced["flags"]  # not routed, yet identified and judged
    assert forced["audio_expected_p"] < forced["audio_language_p"]  # English: less likely

    preset = tmp_path / "wanted.yaml"
    preset.write_text("drop: [unwanted_language, unsure_language]\n")
    summary = merge(cfg, track=False, preset=str(preset))
    merged = pq.ParquetDataset(rd.merged_files()).read().to_pylist()
    unwanted = [r["id"] for r in out.values() if r["flags"] and {"unwanted_language",
                "unsure_language"} & set(r["flags"])]
    assert unwanted and summary.dropped_by_preset == len(unwanted)
    assert all(r["audio_language"] in ("en", "es", "fr") for r in merged if r["error"] is None)
    assert len(merged) + len(unwanted) == len(rows)
