"""How alike an encoder's features are across images: the mean pairwise cosine similarity of the features of
the first 200 DIGITS training images (normalised as for training), for every registered encoder at its
initialisation (seed 0, training mode: BatchNorm normalises with the batch's statistics, as in training), and for
saved checkpoints (eval mode, as evaluated).

The memory heads attend by cosine distance: features that are nearly the same for every image (similarity near 1)
give content weights near uniform and a memory vector that tells the head almost nothing about the input.

Run: python -m bench.feature_similarity [--checkpoints PATH.pt ...] [--networks vit mobilenet]
"""
import argparse

import torch

import aux
import datasets
import readers
from architectures import build_model, list_encoders
from base.errors import UserError
from core.checkpoints import Checkpoint

IMAGES = 200


def mean_pairwise_cosine(features: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(features.float(), dim=1)
    similarity = unit @ unit.T
    return similarity[~torch.eye(len(unit), dtype=torch.bool)].mean().item()


def digits_images() -> torch.Tensor:
    train, _ = readers.read_digits()
    spec = datasets.get_spec("DIGITS")
    return datasets.normalize(train.images[:IMAGES].float() / 255, spec.mean, spec.std)


@aux.exit_on_user_errors
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="*", default=list_encoders(), choices=list_encoders(),
                        help="encoders measured at initialisation")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="saved runs measured as trained")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    images = digits_images()
    print(f"| model | state | mean pairwise cosine similarity ({IMAGES} DIGITS images) |\n|---|---|---|")
    for name in args.networks:
        torch.manual_seed(0)
        model = build_model(name, "std", 10).train()
        with torch.no_grad():
            print(f"| `{name}` | initialised (seed 0) | {mean_pairwise_cosine(model.encode(images)):.4f} |", flush=True)
    for path in args.checkpoints:
        checkpoint = Checkpoint.load(path)
        if checkpoint.dataset_name != "DIGITS":
            raise UserError(f"{path} was trained on {checkpoint.dataset_name}; this measures on DIGITS images only")
        model = checkpoint.build_model().eval()
        with torch.no_grad():
            similarity = mean_pairwise_cosine(model.encode(images))
        print(f"| `{checkpoint.model_name}` {checkpoint.modality} | trained: `{path}` | {similarity:.4f} |", flush=True)


if __name__ == "__main__":
    main()
