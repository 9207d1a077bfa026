"""core/runtime.py: devices, precisions, memory formats, the fast paths; config file errors."""
import pytest
import torch

from architectures import build_model, list_heads
from core import runtime
from core.config import ConfigError, load_config
from core.runtime import Execution, autocast_dtype, choose_device


def test_device_precision_and_config_file_errors(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda' was asked for but torch sees no CUDA GPU"):
            choose_device("cuda")
    with pytest.raises(ConfigError, match="precision 'fp16' needs a CUDA device"):
        autocast_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


NETWORKS = ["mobilenet", "resnet18", "efficientnet", "googlenet", "shufflenet", "densenet"]
FAST_PATHS = {  # execution -> tolerance on the logits: a fraction of the image's largest |logit|, at least of 1
    "fp32 channels_last": (Execution(None, torch.channels_last), 1e-5),
    "bf16 channels_last": (Execution(torch.bfloat16, torch.channels_last), 2e-2),
}


@pytest.fixture(scope="module")
def fixed_input():
    generator = torch.Generator().manual_seed(0)
    # 16 px: every layer computes as at 32 px, at a quarter of the cost (bf16 is emulated on an AVX2 CPU)
    return torch.randn(3, 3, 16, 16, generator=generator), torch.randn(6, 3, 16, 16, generator=generator)


# every network under Memory Wrap, and every head on the quickstart's network: what a head computes in fp32 under
# autocast does not depend on the encoder before it (the full product took 48 cases, 4 minutes on an AVX2 CPU, where
# bf16 is emulated)
CASES = [(network, "encoder_memory") for network in NETWORKS] + [
    ("shufflenet", modality) for modality in list_heads() if modality != "encoder_memory"]


@pytest.mark.parametrize("network,modality", CASES)
def test_fast_paths_give_the_predictions_of_fp32_contiguous(fixed_input, network, modality):
    """Logits within the stated tolerance of fp32 NCHW, and the same prediction wherever the fp32 margin between
    the top two classes is larger than twice that tolerance (the tolerance scales with the logits: bfloat16 keeps
    8 bits of mantissa, a relative error of 0.4% per operation)."""
    images, memory = fixed_input
    torch.manual_seed(0)
    model = build_model(network, modality, 10).eval()
    labels = torch.arange(len(memory)) % 10

    def logits(execution):
        model.to(memory_format=execution.memory_format)
        with torch.no_grad(), torch.autocast("cpu", dtype=execution.autocast, enabled=execution.autocast is not None):
            x = images.contiguous(memory_format=execution.memory_format)
            m = memory.contiguous(memory_format=execution.memory_format)
            return (model(x, m, labels) if model.uses_memory else model(x)).float()

    reference = logits(Execution(None, torch.contiguous_format))
    scale = reference.abs().max(1, keepdim=True).values.clamp(min=1.0)  # -cosine distances: differences of O(1)
    top2 = reference.topk(2, dim=1).values
    for name, (execution, tolerance) in FAST_PATHS.items():
        fast = logits(execution)
        assert ((fast - reference).abs() <= tolerance * scale).all(), (name, ((fast - reference).abs() / scale).max())
        clear = (top2[:, 0] - top2[:, 1]) > 2 * tolerance * scale[:, 0]
        assert torch.equal(fast.argmax(1)[clear], reference.argmax(1)[clear]), name


def test_auto_picks_bf16_only_where_the_cpu_has_it_and_bf16_elsewhere_warns(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    assert runtime.autocast_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    assert runtime.autocast_dtype("auto", cpu) is None
    with pytest.warns(UserWarning, match="bf16 on a CPU without native bfloat16 .* about 5x slower"):
        assert runtime.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert runtime.autocast_dtype("auto", torch.device("cuda")) == torch.float16  # no GPU needed to decide
    assert runtime.memory_format("auto", cpu) == torch.channels_last
    assert runtime.memory_format("contiguous", torch.device("cuda")) == torch.contiguous_format
    with pytest.raises(ConfigError, match="memory_format must be one of"):
        runtime.memory_format("nhwc", cpu)
    names = Execution(torch.bfloat16, torch.channels_last).names()
    assert names == {"precision": "bf16", "memory_format": "channels_last", "fp32_layers": []} and \
        Execution.from_names(names).names() == names


def test_keep_freed_memory_can_be_turned_on_and_off():
    if not runtime.keep_freed_memory(True):
        pytest.skip("no glibc here: the allocator is left as it is")
    assert runtime.keep_freed_memory(False)
    assert runtime.keep_freed_memory(True)


def test_auto_keeps_fp32_for_the_networks_that_train_faster_in_it(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    cpu = torch.device("cpu")
    for name in runtime.FP32_ON_CPU:
        assert runtime.autocast_dtype("auto", cpu, name) is None, name
        assert runtime.autocast_dtype("bf16", cpu, name) == torch.bfloat16, "an explicit choice is kept"
    assert runtime.Execution.resolve("auto", "auto", cpu, "mobilenet").names() == {
        "precision": "bf16", "memory_format": "channels_last", "fp32_layers": []}
