"""Throughput and MFU arithmetic (no GPU needed)."""

import pytest
import torch

from training.model import BertConfig, flops_per_token
from training.models import preset_fields
from training.throughput import ThroughputMeter, mfu, peak_tflops_for, resolve_peak_tflops


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA A10G", 125.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("Tesla V100-SXM2-16GB", 125.0),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_known_gpus_are_matched_by_name_most_specific_first(name, tflops):
    assert peak_tflops_for(name) == tflops


def test_config_override_wins_and_cpu_has_no_peak():
    assert resolve_peak_tflops(500.0) == 500.0
    with pytest.raises(ValueError):
        resolve_peak_tflops(0.0)
    if not torch.cuda.is_available():
        assert resolve_peak_tflops(None) is None


def test_mfu_of_bert_base_at_128():
    cfg = BertConfig(vocab_size=30522, **preset_fields("base"))
    f = flops_per_token(cfg, 128, sparse_fraction=0.15)  # ~545.4 MFLOP/token (REFERENCE)
    # 8 H100s at 989 TFLOP/s each, 50% MFU: 8 * 494.5e12 / f tokens/s.
    tokens_per_s = 8 * 0.5 * 989e12 / f
    assert mfu(tokens_per_s, f, 989.0, world_size=8) == pytest.approx(0.5)
    assert mfu(1e6, 500e6, 1000.0) == pytest.approx(0.5)  # 5e14 FLOP/s of 1e15
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_meter_counts_between_log_points_ints_and_tensors():
    clock = FakeClock()
    meter = ThroughputMeter(clock=clock, sync_cuda=False)
    meter.update(8, torch.tensor(900))
    meter.update(8, 1100)
    clock.now += 4.0
    window = meter.report()
    assert (window.samples, window.tokens, window.seconds) == (16, 2000, 4.0)
    assert window.samples_per_s == 4.0 and window.tokens_per_s == 500.0

    clock.now += 1.0  # the next window starts at the report
    meter.update(4, 100)
    clock.now += 1.0
    window = meter.report()
    assert (window.samples, window.tokens, window.seconds) == (4, 100, 2.0)

    clock.now += 30.0  # e.g. evaluation: start() leaves it out
    meter.start()
    meter.update(2, 50)
    clock.now += 0.5
    assert meter.report().tokens_per_s == 100.0


def test_empty_window_reports_zero_rates():
    clock = FakeClock()
    window = ThroughputMeter(clock=clock, sync_cuda=False).report()
    assert (window.samples_per_s, window.tokens_per_s) == (0.0, 0.0)
