"""Smoke test of benchmarks/: the reference model's size and shapes, and a tiny benchmark run."""
import sys
from pathlib import Path

import torch

from probe.models import build_model, count_parameters

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import reference_resnet as ref  # noqa: E402
import train_throughput  # noqa: E402


def test_reference_resnet20_parameter_count():
    # The counts expected here are worked out from the architecture (He et al. 2015, CIFAR:
    # 6n+2 layers, n = 3 for resnet20, 3×3 convs, 16/32/64 filters, option-A shortcuts with no
    # parameters), not read off the model, so a change to the reference shows.
    n, widths, in_channels, classes = 3, (16, 32, 64), 3, 10
    stem = 9 * in_channels * widths[0] + 2 * widths[0]  # conv weight + BatchNorm
    blocks, c_in = 0, widths[0]
    for w in widths:
        for _ in range(n):
            blocks += 9 * c_in * w + 9 * w * w + 2 * (2 * w)  # two conv weights + two BatchNorms
            c_in = w
    head = widths[-1] * classes + classes
    bias_free = stem + blocks + head
    # One conv bias per output channel: the stem's, then 2n convs at each stage's width.
    conv_biases = widths[0] + sum(2 * n * w for w in widths)
    assert (bias_free, conv_biases) == (269_722, 688)  # the hand count, written out

    m = ref.resnet20()
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == 6 * n + 1  # every weighted layer but the fc
    assert sum(c.bias.numel() for c in convs if c.bias is not None) == conv_biases
    assert sum(p.numel() for p in m.parameters()) == bias_free + conv_biases
    # probe's resnet20 is the same network with bias-free convs (they are followed by BatchNorm).
    assert count_parameters(build_model("resnet20")) == bias_free


def test_reference_output_shapes():
    m = ref.resnet20().eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    mnist = ref.resnet20(in_channels=1, width=0.5).eval()
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # The option-A shortcut subsamples and appends zero channels.
    x = torch.randn(1, 16, 8, 8)
    s = ref.ShortcutA(16, 32, 2)(x)
    assert s.shape == (1, 32, 4, 4)
    assert torch.equal(s[:, :16], x[:, :, ::2, ::2]) and not s[:, 16:].any()


def test_reference_dataset_item():
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8).numpy()
    ds = ref.AugmentedImages(images, torch.arange(4).numpy(), (0.5,) * 3, (0.25,) * 3)
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1


def test_benchmark_main_runs_tiny():
    # --gemm-size 64: the GEMM peak's default 2048² matmul (7 × 17 GFLOP) was most of this test
    out = train_throughput.main(["--steps", "1", "--repeats", "1", "--batch-size", "8",
                                 "--gemm-size", "64", "--quiet"])
    res = out["results"]
    assert set(res) == {"probe bf16", "probe fp32", "reference fp32"}
    for name, r in res.items():
        assert len(r["seconds"]) == 2 and r["median_images_per_second"] > 0
        assert r["train_flops_per_image"] == 6 * RESNET20_CIFAR_MACS
        assert r["median_gflops"] > 0 and r["fraction_of_gemm_peak"] > 0
        if name != "reference fp32":
            assert r["ratio_of_medians"] > 0
    assert out["gemm_peak"]["median_gflops"] > 0 and out["peak_rss_mib"]["self"] > 0
    assert set(out["machine"]["cpu_flags"]) >= {"avx2", "avx512f", "avx512_bf16"}


# resnet20 on 3×32×32, forward multiply-accumulates worked out by hand: the stem (27 → 16 at
# 32×32), stage 1 (6 convs 144 → 16 at 32×32), stages 2 and 3 (a strided conv, then 5 convs, at
# 16×16 / 8×8: each conv 2,359,296 but the strided ones half), the fc (64 → 10).
RESNET20_CIFAR_MACS = (32 * 32 * 16 * 27 + 6 * 32 * 32 * 16 * 144
                       + 2 * (5 * 2_359_296 + 2_359_296 // 2) + 640)


def test_forward_macs_counts_convs_and_linear():
    assert RESNET20_CIFAR_MACS == 40_551_040
    assert train_throughput.forward_macs(build_model("resnet20"), (3, 32, 32)) == RESNET20_CIFAR_MACS
    assert train_throughput.forward_macs(ref.resnet20(), (3, 32, 32)) == RESNET20_CIFAR_MACS
    # Grouped conv: each output sees in_channels / groups inputs.
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, groups=2)
    assert train_throughput.forward_macs(conv, (4, 5, 5)) == 8 * 5 * 5 * 2 * 9


def test_convs_only_side_runs_the_convs_of_the_network():
    side = train_throughput.ConvsOnlySide(build_model("resnet20"), (3, 32, 32), 2, 1)
    assert len(side.convs.work) == 19 and side.flops_per_image == 6 * (RESNET20_CIFAR_MACS - 640)
    # training: weight gradients everywhere, input gradients for all but the images
    assert [x.requires_grad for _, x in side.convs.work] == [False] + [True] * 18
    assert all(conv.weight.requires_grad for conv, _ in side.convs.work)
    assert side.run() == 2
