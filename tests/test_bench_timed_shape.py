"""The throughput benchmarks' timestamped stand-in output (bench/gpu/timed_shape.py): what it
hands the split-back must place every clip of a window, with the real token count decoded."""

from __future__ import annotations

import pytest

from asrd.audio.pack import Member, PackSettings, plan_windows
from asrd.engines.whisper_timestamps import WhisperIds, packed_hypotheses, timed_pieces

timed_shape = pytest.importorskip("bench.gpu.timed_shape")

IDS = WhisperIds(first_special=50257, timestamp_begin=50364)


def _members(lengths: list[float], gap: float) -> list[Member]:
    out, t = [], 0.0
    for i, n in enumerate(lengths):
        out.append(Member(row=i, id=str(i), offset_s=t, length_s=n))
        t += n + gap
    return out


@pytest.mark.parametrize("lengths", [[5.0] * 5, [2.5, 7.1, 3.3, 4.0], [14.0, 14.0]])
def test_every_clip_of_a_window_is_placed(lengths):
    groups = plan_windows(lengths, PackSettings())
    assert groups == [list(range(len(lengths)))]  # one window, as the pipeline packs them
    members = _members(lengths, PackSettings().gap_s)
    n = timed_shape.window_tokens(members)
    generated = list(range(50000, 50000 + n))  # random weights: any ids, specials included
    tokens, lps = timed_shape.timestamped(generated, members, IDS, [-0.5] * n)
    assert len(tokens) == n == len(lps)  # the output decoded is exactly the window's length
    assert sum(t >= IDS.timestamp_begin for t in tokens) == 2 * len(members)
    pieces = timed_pieces(tokens, IDS, lambda t: " ".join(map(str, t)), lps)
    hyps = packed_hypotheses(pieces, members)
    assert all(h is not None and h.text for h in hyps)
    for h, m in zip(hyps, members):
        assert len(h.text.split()) == timed_shape.clip_tokens(m.length_s)
        assert h.avg_logprob == pytest.approx(-0.5)
