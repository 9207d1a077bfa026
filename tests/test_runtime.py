"""core/runtime.py and config file errors: devices, precisions."""
import pytest
import torch

from core.config import ConfigError, load_config
from core.runtime import autocast_dtype, choose_device


def test_device_precision_and_config_file_errors(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda' was asked for but torch sees no CUDA GPU"):
            choose_device("cuda")
    with pytest.raises(ConfigError, match="precision 'fp16' needs a CUDA device"):
        autocast_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
