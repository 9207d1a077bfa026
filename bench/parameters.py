"""The README's table of parameter counts: every registered encoder with the paper's three heads.

Run: python -m bench.parameters [--networks mobilenet vit]   (built on the meta device: nothing is allocated)
"""
import argparse

import torch

from architectures import build_model, create_encoder, list_encoders

PAPER_SIX = ("mobilenet", "resnet18", "efficientnet", "googlenet", "shufflenet", "densenet")
MODALITIES = ("std", "memory", "encoder_memory")


def parameter_table(networks=None) -> str:
    lines = ["| `--model` | features D | std | memory | encoder_memory |", "|---|---|---|---|---|"]
    ordered = list(PAPER_SIX) + [name for name in list_encoders() if name not in PAPER_SIX]
    ordered = [name for name in ordered if networks is None or name in networks]
    with torch.device("meta"):
        for name in ordered:
            counts = [sum(p.numel() for p in build_model(name, m, 10).parameters()) for m in MODALITIES]
            lines.append(f"| `{name}` | {create_encoder(name).feature_dim} | " + " | ".join(f"{c:,}" for c in counts)
                         + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--networks", nargs="+", default=None, help="only these encoders (default: every one)")
    args = parser.parse_args()  # an unknown argument ends with a usage line (argparse)
    unknown = sorted(set(args.networks or ()) - set(list_encoders()))
    if unknown:
        parser.error(f"--networks: {unknown} are not registered encoders; choose among {list_encoders()}")
    print(parameter_table(args.networks))


if __name__ == "__main__":
    main()
