"""Audio in: probe and decode any common format to 16 kHz mono (`decode`), cut it into model
inputs (`segment`), and keep a node-local copy of remote files (`cache`)."""

from asrd.audio.decode import AudioError, AudioInfo, Source, decode, probe
from asrd.audio.segment import split_points

__all__ = ["AudioError", "AudioInfo", "Source", "decode", "probe", "split_points"]
