"""Smoke test of benchmarks/: the reference model's size and shapes, and a tiny benchmark run."""
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import reference_resnet as ref  # noqa: E402
import train_throughput  # noqa: E402


def test_reference_resnet20_parameter_count():
    m = ref.resnet20()
    # probe's resnet20 (option A, convs without bias) has 269,722 parameters. The reference
    # keeps a bias on each of its 19 convs, one per output channel:
    #   stem 16 + stage1 6 convs × 16 + stage2 6 × 32 + stage3 6 × 64 = 16 + 96 + 192 + 384 = 688
    conv_biases = 16 + 6 * 16 + 6 * 32 + 6 * 64
    assert conv_biases == 688
    assert sum(p.numel() for p in m.parameters()) == 269_722 + conv_biases == 270_410
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == 19 and all(c.bias is not None for c in convs)


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
    out = train_throughput.main(["--steps", "1", "--repeats", "1", "--batch-size", "8",
                                 "--quiet"])
    res = out["results"]
    assert set(res) == {"probe bf16", "probe fp32", "reference fp32"}
    for name, r in res.items():
        assert len(r["seconds"]) == 2 and r["median_images_per_second"] > 0
        if name != "reference fp32":
            assert r["ratio_of_medians"] > 0
