"""The decoder's downmix gives numpy's channel mean bit for bit: the cheaper sum must not change
a single sample the models see."""

import numpy as np
import pytest
import soundfile as sf
import soxr

from asrd.audio import decode
from asrd.audio.decode import downmix


def _frames(channels: int) -> np.ndarray:
    """Loud random audio, PCM-16 steps, full scale and signed zeros: where rounding differs."""
    rng = np.random.default_rng(channels)
    x = rng.normal(0, 0.4, (48000, channels)).astype(np.float32)
    x[:16000] = np.round(x[:16000] * 32768) / 32768
    x[16000:16100] = np.float32(-0.0)
    x[16100:16200] = np.float32(1.0) - np.float32(2 ** -15)
    x[16200:16300, ::2] = np.float32(-1.0)
    return x


@pytest.mark.parametrize("channels", range(1, 13))
def test_downmix_is_numpys_mean_bit_for_bit(channels):
    x = _frames(channels)
    want = x[:, 0] if channels == 1 else x.mean(axis=1, dtype=np.float32)
    got = downmix(x)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def test_a_stereo_48k_flac_decodes_as_before(tmp_path):
    """The whole decode against the former path: libsndfile, numpy's mean, soxr's HQ stream."""
    x = _frames(2)[:, :2] * 0.5
    path = tmp_path / "s.flac"
    sf.write(path, x, 48000, subtype="PCM_16")
    pcm = sf.read(path, dtype="float32", always_2d=True)[0]
    before = soxr.ResampleStream(48000, 16000, 1, dtype="float32", quality="HQ").resample_chunk(
        pcm.mean(axis=1, dtype=np.float32), last=True)
    assert decode(str(path), 16000).tobytes() == before.tobytes()
