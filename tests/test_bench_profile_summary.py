"""The GPU profile's summary (bench/gpu/profile_summary.py): each GPU kernel is charged to where it
was launched from, in a trace shaped as torch's profiler writes it (Python frames and nn.Module
calls on the launching thread, CUDA calls tied to their kernels by correlation id)."""

from __future__ import annotations

import gzip
import json

import pytest

profile_summary = pytest.importorskip("bench.gpu.profile_summary")

RUNNER = "vllm/v1/worker/gpu_model_runner.py"
THREAD = dict(pid=7, tid=7)


def _frame(name: str, ts: float, dur: float, cat: str = "python_function") -> dict:
    return dict(ph="X", cat=cat, name=name, ts=ts, dur=dur, **THREAD)


def _launch(corr: int, ts: float, name: str = "cudaLaunchKernel") -> dict:
    return dict(ph="X", cat="cuda_runtime", name=name, ts=ts, dur=1, args={"correlation": corr},
                **THREAD)


def _kernel(corr: int, name: str, ts: float, dur: float) -> dict:
    return dict(ph="X", cat="kernel", name=name, ts=ts, dur=dur, pid=0, tid=9,
                args={"correlation": corr})


def _trace() -> list[dict]:
    """Step 1 admits a request (encoder, then an eager decoder pass); step 2 is a CUDA graph."""
    return [
        _frame(f"{RUNNER}(4050): execute_model", 0, 100),
        _frame(f"{RUNNER}(2940): _execute_mm_encoder", 5, 30),
        _frame("nn.Module: WhisperEncoder_0", 6, 28),
        _launch(1, 10),
        _frame("gpu_model_runner: forward", 40, 50, cat="user_annotation"),
        _frame("nn.Module: WhisperDecoder_0", 41, 48),
        _frame("nn.Module: WhisperCrossAttention_0", 42, 10),
        _launch(2, 45),
        _frame("nn.Module: WhisperMLP_0", 60, 10),
        _launch(3, 62),
        _launch(4, 80),  # in the forward, outside the modules above
        _frame(f"{RUNNER}(4050): execute_model", 200, 50),
        _frame("gpu_model_runner: forward", 205, 30, cat="user_annotation"),
        _launch(5, 210, "cudaGraphLaunch"),
        _kernel(1, "flash_fwd_kernel", 1000, 400),
        _kernel(2, "gemm_cross", 1400, 100),
        _kernel(3, "gemm_mlp", 1500, 50),
        _kernel(4, "layer_norm", 1550, 10),
        _kernel(5, "graph_gemm", 2000, 200),
        _kernel(5, "graph_attn", 2200, 100),
        _kernel(99, "orphan", 2300, 5),  # launched before the trace began
    ]


def test_kernels_are_charged_to_where_they_were_launched():
    s = profile_summary.summarize(_trace())
    assert s.kernel_ms == {"encoder": 0.4, "decoder cross-attention": 0.1, "decoder mlp": 0.05,
                           "decoder other": 0.01, "decoder graph": 0.3, "unattributed": 0.005}
    assert s.unmatched == 1
    assert s.span_ms == pytest.approx(1.305)
    assert s.busy_ms == pytest.approx(0.865)  # the gaps between kernels are not busy
    assert list(s.shares())[0] == "encoder"


def test_steps_with_and_without_the_encoder():
    s = profile_summary.summarize(_trace())
    assert (s.steps, s.encoder_steps) == (2, 1)
    assert s.step_gpu_ms == {"encoder steps": pytest.approx(0.56),
                             "decode-only steps": pytest.approx(0.3)}


def test_reads_the_gzipped_trace_vllm_writes(tmp_path):
    path = tmp_path / "worker.pt.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": _trace()}, f)
    assert profile_summary.summarize(profile_summary.load_events(path)).steps == 2


# Lines of the table vLLM's worker wrote on the H200 (large-v3, 40 steps), as it wrote them.
TABLE = '''\
-------------------------------------------------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  
                                                   Name    Self CPU %      Self CPU   CPU total %     CPU total  CPU time avg     Self CUDA   Self CUDA %    CUDA total  CUDA time avg    # of Calls  
-------------------------------------------------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------  
void cutlass::device_kernel<flash::enable_sm90_or_la...         0.00%       0.000us         0.00%       0.000us       0.000us        1.361s        73.95%        1.361s     616.620us          2208  
                                       _vllm_fa3_C::fwd         1.15%      41.571ms         2.51%      91.018ms      86.191us     476.677ms        25.89%     476.701ms     451.422us          1056  
               execute_context_0(0)_generation_469(469)         0.00%       0.000us         0.00%       0.000us       0.000us     230.687ms        12.53%     230.687ms      46.137ms             5  
                                            aten::addmm         5.30%     192.509ms         6.55%     237.774ms      61.408us     143.163ms         7.78%     143.187ms      36.980us          3872  
    nvjet_sm90_hsh_128x288_64x4_2x1_v_bz_coopA_bias_TNT         0.00%       0.000us         0.00%       0.000us       0.000us      25.928ms         1.41%      25.928ms     270.079us            96  
void cutlass::device_kernel<flash::FlashAttnFwdCombi...         0.00%       0.000us         0.00%       0.000us       0.000us      22.046ms         1.20%      22.046ms       8.833us          2496  
                                        Memset (Device)         0.00%       0.000us         0.00%       0.000us       0.000us     434.431us         0.02%     434.431us       0.890us           488  
Self CPU time total: 3.629s
Self CUDA time total: 1.841s

'''


def test_the_kernel_table_counts_kernel_rows_once(tmp_path):
    """Operators (CPU time) and CUDA-graph replays also list CUDA time; only kernel rows count."""
    path = tmp_path / "profiler_out_0.txt"
    path.write_text(TABLE)
    got = profile_summary.kernel_table_shares(path)
    assert got == pytest.approx({"attention": 1.361 + 0.022046, "gemm": 0.025928,
                                 "other": 0.000434}, abs=1e-6)
