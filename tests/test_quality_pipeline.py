"""Quality signals and flags end to end: the real Whisper-base on Ray writes them to the shard
file; merge applies a preset, counts what each flag dropped, keeps a NeMo manifest's `text` as
`reference`, writes the report page and logs its figures to the merge's W&B run."""

from __future__ import annotations

import json
import re
import subprocess

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from asrd.cli import main
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan
from asrd.report import REPORT_NAME
from asrd.runtime.task import run_task
from asrd.schema import QUALITY_FIELDS
from asrd.speech_samples import SENTENCES, non_speech
from tests.conftest import make_cfg
from tests.test_tracking import fragments, read_run, wb_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quality_run(corpus, tmp_path_factory):
    """Three rows of a NeMo manifest: speech with its right reference, the same speech with a
    wrong one, and silence; one shard through the real model, at the default thresholds."""
    work = tmp_path_factory.mktemp("quality")
    sf.write(work / "silence.wav", non_speech("silence", 5.0), 16000)
    rows = [{"audio_filepath": str(corpus / "utt000.wav"), "text": SENTENCES[0]},
            {"audio_filepath": str(corpus / "utt000.wav"), "id": "wrong-ref",
             "text": "a completely different sentence about the sea"},
            {"audio_filepath": str(work / "silence.wav"), "text": ""}]
    (work / "nemo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(work / "nemo.jsonl", work / "index.parquet")
    cfg = make_cfg(work / "index.parquet", work / "run", "run.num_shards=1")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    return cfg, rd


def test_signals_and_flags_in_the_shard_file(quality_run):
    _, rd = quality_run
    shard = pq.read_table(rd.shard_file(0))
    assert {name for name, _ in QUALITY_FIELDS} <= set(shard.column_names)
    assert shard.schema.metadata[b"asrd_schema_version"] == b"5"
    rows = {r["path"].rsplit("/", 1)[-1] + ("*" if r["id"] == "wrong-ref" else ""): r
            for r in shard.to_pylist()}
    good, wrong, silence = rows["utt000.wav"], rows["utt000.wav*"], rows["silence.wav"]
    assert good["reference"] == SENTENCES[0] and good["flags"] == []
    assert good["cer"] < 0.3 and good["text_language"] == "en" and good["num_words"] >= 8
    assert good["avg_logprob"] < 0 and good["compression_ratio"] > 0
    assert good["segments"][0]["avg_logprob"] is not None
    assert wrong["flags"] == ["reference_wer", "reference_cer"] and wrong["cer"] >= 0.3
    assert silence["flags"] == ["empty"] and silence["speech_s"] == 0


def test_merge_applies_a_preset_and_counts_each_flag(quality_run):
    cfg, rd = quality_run
    summary = merge(cfg, track=False, preset="run")  # the run's own thresholds
    merged = pq.ParquetDataset(rd.merged_files()).read()
    assert merged.num_rows == summary.kept == 1
    assert merged.column("reference").to_pylist() == [SENTENCES[0]]
    assert summary.preset == "run" and summary.dropped_by_preset == 2
    assert summary.dropped_by_flag == {"reference_wer": 1, "reference_cer": 1, "empty": 1}
    saved = json.loads((rd.merged_dir / "summary.json").read_text())
    assert saved["dropped_by_flag"] == summary.dropped_by_flag
    everything = merge(cfg, track=False, preset="none")
    assert everything.kept == 3 and everything.dropped_by_preset == 0
    assert pq.read_table(rd.shard_file(0)).num_rows == 3  # nothing deleted from the shard


def test_merge_strict_preset_flags_again_at_its_own_thresholds(quality_run):
    cfg, rd = quality_run
    shard = {r["id"]: r for r in pq.read_table(rd.shard_file(0)).to_pylist()}
    summary = merge(cfg, track=False, preset="strict")  # WER threshold 10%, not the run's 75%
    assert summary.preset == "strict"
    merged = pq.ParquetDataset(rd.merged_files()).read().to_pylist()
    assert all(r["flags"] == [] for r in merged)
    good = next(r for r in shard.values() if r["id"] != "wrong-ref" and r["flags"] == [])
    assert (good["wer"] >= 0.10) == (summary.dropped_by_flag.get("reference_wer") == 2)
    assert summary.kept == 3 - summary.dropped_by_preset


def test_merge_writes_the_report_page_and_logs_it_to_w_and_b(quality_run, wb_env, tmp_path):
    cfg, rd = quality_run
    cfg = OmegaConf.merge(cfg, {"wandb": {"mode": "offline", "dir": str(tmp_path)}})
    summary = merge(cfg, preset="run")
    page = (rd.merged_dir / REPORT_NAME).read_text()
    for figure in ("signals", "flags_by_language", "throughput_over_time", "shard_wall_times"):
        assert f'alt="{figure}" src="data:image/png;base64,' in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may spell it
    assert "http" not in text.replace("http-equiv", "")  # self-contained: nothing to fetch
    assert "wrong-ref" in page and "reference_wer" in page  # the flagged sample
    (frag,) = fragments(tmp_path / "wandb")
    got = read_run(frag)
    assert got["summary"]["dropped_by_flag/reference_wer"] == 1 == summary.dropped_by_flag[
        "reference_wer"]
    assert got["summary"]["quality/preset"] == "run"  # what judged the rows
    assert got["summary"]["quality/thresholds/max_reference_wer"] == 0.75
    images = {p.name.rsplit("_", 2)[0] for p in frag.parent.glob("files/media/images/quality/*.png")}
    assert images == {"signals", "flags_by_language", "throughput_over_time", "shard_wall_times"}
    (table,) = frag.parent.glob("files/media/table/flagged_rows_*.json")
    flagged = json.loads(table.read_text())
    ids = [r[flagged["columns"].index("id")] for r in flagged["data"]]
    assert sorted(i.rsplit("/", 1)[-1] for i in ids) == ["silence.wav", "wrong-ref"]
    again = tmp_path / "again.html"
    assert main(["report", f"run.dir={rd.path}", f"run.index={cfg.run.index}",
                 "-o", str(again)]) == 0
    assert 'alt="signals"' in again.read_text()


def test_faster_whisper_detects_the_spoken_language_on_the_encoder_output_it_kept(
        tmp_path, monkeypatch):
    """German speech transcribed as English: Whisper's language detection runs after the
    transcription on the encoder output it left (one encoder pass for the segment) and says
    German; a segment whose transcript is not in doubt is not detected at all."""
    import math

    from faster_whisper import WhisperModel

    from asrd import config as config_mod
    from asrd.audio import decode
    from asrd.engines import Segment, build_engine

    subprocess.run(["espeak-ng", "-v", "de", "-w", str(tmp_path / "de.wav"),
                    "das wetter ist heute sonnig mit einer leichten brise aus dem westen"],
                   check=True, capture_output=True)
    german = Segment(decode(str(tmp_path / "de.wav"), 16000), "en")
    cfg = config_mod.load(None, ["run.index=x", "quality.audio_language=true"])
    engine = build_engine(cfg.engine, cfg.quality)
    encodes: list[int] = []
    real = WhisperModel.encode
    monkeypatch.setattr(WhisperModel, "encode", lambda self, f: encodes.append(1) or real(self, f))
    (h,) = engine.hypotheses([german])
    assert h.language == "de" and h.language_p > 0.7 and len(encodes) == 1
    engine.detect_below = -math.inf  # nothing in doubt: no detection
    (again,) = engine.hypotheses([german])
    assert again.language is None and again.text == h.text


def test_merge_takes_thresholds_and_a_preset_file_at_merge_time(quality_run, tmp_path, capsys):
    """Thresholds only judge stored signals: `asrd merge quality.thresholds.X=...` is no config
    drift, the flags are computed again, and summary.json records what judged the rows; a key
    that changes what the run wrote is still refused."""
    from asrd.cli import main

    cfg, rd = quality_run
    run = [f"run.dir={rd.path}", f"run.index={cfg.run.index}"]
    summary_path = rd.merged_dir / "summary.json"

    def kept() -> list[str]:
        return sorted(r.rsplit("/", 1)[-1] for r in pq.ParquetDataset(
            rd.merged_files()).read().column("id").to_pylist())

    assert main(["merge", *run, "quality.thresholds.max_reference_wer=5",
                 "quality.thresholds.max_reference_cer=5", "--preset", "default"]) == 0
    saved = json.loads(summary_path.read_text())
    assert saved["quality"]["threshold_edits"] == {"max_reference_cer": 5.0,
                                                  "max_reference_wer": 5.0}
    assert saved["quality"]["thresholds"]["max_reference_wer"] == 5.0
    assert saved["quality"]["preset"] == "default" and saved["dropped_by_flag"] == {"empty": 1}
    assert kept() == ["utt000.wav", "wrong-ref"]

    preset = tmp_path / "keep-speech.yaml"
    preset.write_text("description: keep every row with words\ndrop: [empty]\n")
    assert main(["merge", *run, "--preset", str(preset)]) == 0
    saved = json.loads(summary_path.read_text())
    assert saved["quality"]["preset"] == "keep-speech" and saved["quality"]["drop"] == ["empty"]
    assert saved["quality"]["preset_file"] == str(preset.resolve())
    assert kept() == ["utt000.wav", "wrong-ref"]
    assert main(["report", *run, "quality.thresholds.max_no_speech_prob=0.9"]) == 0

    capsys.readouterr()
    for refused in ("engine.beam_size=5", "quality.languages=[en,fr]"):
        assert main(["merge", *run, refused]) == 2
        err = capsys.readouterr().err
        assert err.startswith("asrd: error: config drift") and refused.split("=")[0] in err
    preset.write_text("drop: [audio_language]\n")
    assert main(["merge", *run, "--preset", str(preset)]) == 2
    assert "renamed 'spoken_other_language'" in capsys.readouterr().err
    assert kept() == ["utt000.wav", "wrong-ref"]  # a refused merge leaves the last one


def test_faster_whisper_detects_the_spoken_language_of_short_text_and_packed_clips_in_doubt(
        tmp_path):
    """Text language ID cannot judge a three-word text, so a segment transcribed alone whose
    text is shorter than quality.doubt_words has its spoken language detected (one decoder
    step), with the probability of the language it was forced to; in a packed window, a clip
    in doubt has its language detected on its own audio, and a clip not in doubt has none."""
    import numpy as np

    from asrd import config as config_mod
    from asrd.audio import decode
    from asrd.audio.pack import Member, build_window
    from asrd.engines import Segment, build_engine

    def say(voice: str, text: str) -> np.ndarray:
        wav = tmp_path / f"{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       capture_output=True)
        return decode(str(wav), 16000)

    cfg = config_mod.load(None, ["run.index=x"])  # detection where cheap and in doubt
    engine = build_engine(cfg.engine, cfg.quality)
    short = say("en-us", "Turn off the lights.")
    (h,) = engine.hypotheses([Segment(short, "en")])
    assert h.avg_logprob > cfg.quality.doubt_logprob  # not in doubt by its log-probability ...
    assert h.language == "en" and h.expected_language_p == h.language_p  # ... but short
    engine.detect_under_words = 0
    (again,) = engine.hypotheses([Segment(short, "en")])
    assert again.language is None and again.expected_language_p is None

    english = say("en-us", SENTENCES[3])
    german = say("de", "das wetter ist heute sonnig mit einer leichten brise aus dem westen")
    window, offsets = build_window([english, german], 16000, 1.0)
    members = [Member(i, str(i), o, len(a) / 16000)
               for i, (o, a) in enumerate(zip(offsets, (english, german)))]
    en_clip, de_clip = engine.hypotheses_packed(Segment(window, "en"), members)
    assert en_clip.avg_logprob >= cfg.quality.doubt_logprob and en_clip.language is None
    assert de_clip.avg_logprob < cfg.quality.doubt_logprob
    assert de_clip.language == "de" and de_clip.expected_language_p < 0.2
