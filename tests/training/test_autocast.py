"""`train.cpu_bf16`: bf16 compute on CPUs that have it natively, float32 everywhere else."""

import pytest
import torch

from mura.training.steps import autocast_for

NATIVE_BF16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512-BF16 / AMX)")
def test_cpu_bf16_computes_convolutions_in_bf16() -> None:
    conv = torch.nn.Conv2d(1, 4, 3)
    with autocast_for(torch.device("cpu"), enabled=True, cpu_bf16=True)():
        assert conv(torch.randn(2, 1, 8, 8)).dtype == torch.bfloat16


def test_cpu_stays_float32_unless_asked() -> None:
    conv = torch.nn.Conv2d(1, 4, 3)
    with autocast_for(torch.device("cpu"), enabled=True)():
        assert conv(torch.randn(2, 1, 8, 8)).dtype == torch.float32
