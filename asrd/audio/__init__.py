"""Audio in: probe and decode any common format to 16 kHz mono (`decode`), cut it into model
inputs by speech (`segment`, `vad`), and keep a node-local copy of remote files (`cache`)."""

from asrd.audio.decode import AudioError, AudioInfo, Source, decode, probe
from asrd.audio.segment import Segmentation, segment, split_points
from asrd.audio.vad import VadSettings, VadUnavailable

__all__ = ["AudioError", "AudioInfo", "Segmentation", "Source", "VadSettings", "VadUnavailable",
           "decode", "probe", "segment", "split_points"]
