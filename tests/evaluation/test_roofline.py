"""sisr.evaluation.roofline: the bytes a forward moves, the device peaks and the floor they give."""

from __future__ import annotations

import torch

from sisr.evaluation.roofline import Traffic, floor_s, peak_rates


def test_traffic_counts_a_convolution_once_and_views_never():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to("meta")
    x = torch.empty(1, 3, 8, 8, device="meta")
    tracer = Traffic()
    with torch.no_grad(), tracer:
        conv(x).view(4, 64).permute(1, 0)
    act = (3 * 64 + 4 * 64) * 4  # input read, output written (fp32); the weights require grad: not activations
    assert tracer.layer_act_bytes == act
    weights = (4 * 3 * 9 + 4) * 4
    assert tracer.op_bytes == act + weights  # the view and permute move nothing


def test_peak_rates_and_floor():
    peaks = peak_rates(torch.device("cpu"), 64, calls=2, copy_mib=1)
    assert set(peaks) == {"fp32", "bf16", "copy_bytes_per_s"} and min(peaks.values()) > 0
    assert floor_s(1e9, 1e6, 1e10, 1e9) == (0.1, "compute")
    assert floor_s(1e6, 1e9, 1e10, 1e9) == (1.0, "memory")
