"""Label quality: per-row signals, flags and presets.

A pseudo-labelled corpus trains a student model, and every bad label it keeps is learned. The
signals are cheap and computed in the pipeline (so a user filters without rerunning the GPUs);
flags compare them with thresholds; a preset picks the flags that drop a row at merge.

Modules, one job each:
  text            signals of the text alone (compression ratio, repeats, unique words, ...)
  hallucinations  known phrases a model writes on non-speech, per language (package data)
  langid          the text's language (lingua, offline)
  reference       WER and CER against a reference transcript, after Whisper's normaliser
  signals         all of a row's signals together (`EngineSignals`, `SignalMaker`)
  thresholds      where each flag trips (the config's `quality.thresholds`)
  flags           the flags a row trips
  presets         named sets of thresholds and flags that `asrd merge` applies
"""
