import os

import numpy as np
import pytest

from asrd.audio import AudioError, decode, probe, split_points
from tests.bad_audio import make_bad_inputs, make_long_silence


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad_inputs(tmp_path_factory.mktemp("bad"))


def test_every_format_decodes_to_16k_mono(corpus):
    for f in sorted(corpus.glob("utt*")):
        info = probe(str(f))
        x = decode(str(f), 16000)
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) / 16000 - info.duration_s) < 0.15, f
        assert 0.01 < np.abs(x).max() <= 1.5


@pytest.mark.parametrize("name", ["missing", "zero-byte", "truncated flac", "random bytes",
                                  "text file", "zero samples", "8 kHz mu-law", "6-channel 96 kHz",
                                  "mp3", "opus", "m4a", "spaces and non-ASCII"])
def test_bad_and_awkward_inputs(bad, name):
    path, reason = bad[name]
    if reason is None:
        x = decode(str(path), 16000)
        assert len(x) > 16000 * 0.3 and np.isfinite(x).all()
    else:
        with pytest.raises(AudioError) as e:
            decode(str(path), 16000)
        assert e.value.reason == reason and str(e.value).startswith(reason)


def test_permission_denied_is_unreadable(bad):
    """Root reads anything, so the decode runs in a child that drops to `nobody`."""
    path, reason = bad["permission"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                decode(str(path))
                got = "decoded"
            except AudioError as e:
                got = e.reason
            os.write(w, got.encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100).decode() == reason


def test_three_hour_recording_is_segmented_not_rejected(tmp_path):
    path = make_long_silence(tmp_path / "long.flac", 3 * 3600)
    assert probe(str(path)).duration_s == pytest.approx(10800, abs=1)
    x = decode(str(path), 16000, max_duration_s=6 * 3600)
    spans = split_points(x, 16000, 30.0)
    assert len(spans) >= 360
    assert spans[0][0] == 0 and spans[-1][1] == len(x)
    assert all(a < b <= a + 30 * 16000 for a, b in spans)
    assert all(s1[1] == s2[0] for s1, s2 in zip(spans, spans[1:]))
    with pytest.raises(AudioError, match="too long"):
        decode(str(path), 16000, max_duration_s=3600)


def test_split_prefers_quiet_points():
    sr = 16000
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.3, 70 * sr).astype(np.float32)
    x[int(27.0 * sr): int(27.4 * sr)] = 0  # a pause inside the search window of the first cut
    (a, b), *_ = split_points(x, sr, 30.0)
    assert 27.0 * sr <= b <= 27.4 * sr
