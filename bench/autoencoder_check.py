"""Do the per-class autoencoders of the counterfactual experiment tell the classes apart? IM1 compares a
counterfactual's reconstruction errors under two class autoencoders, so it means something only if a class's
autoencoder reconstructs its own class better than the others do.

    python -m bench.autoencoder_check --path_models=models/grid/DIGITS/encoder_memory/shufflenet/1000 --run=1
    python -m bench.autoencoder_check --path_models=DIR --run=1 --autoencoders=DIR/autoencoders/1   # another set

Prints, over the run's test images, the mean reconstruction error by the image's own class's autoencoder and by the
other classes', and the share of images whose own class's autoencoder reconstructs them best (chance: 1 / classes).
"""
import argparse
import pathlib

import torch

import aux
from core.checkpoints import Checkpoint
from explanations import autoencoders


@aux.exit_on_user_errors
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path_models", type=pathlib.Path, required=True)
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--autoencoders", type=pathlib.Path, default=None,
                        help="default: <path_models>/autoencoders/<run>")
    args = parser.parse_args()
    checkpoint = Checkpoint.load(args.path_models / f"{args.run}.pt")
    data = checkpoint.run_data(None)
    classes = data.spec.num_classes
    folder = args.autoencoders or args.path_models / autoencoders.FOLDER / str(args.run)
    nets = autoencoders.load_for_run(checkpoint, folder, classes)
    with torch.no_grad():
        images, labels = data.test_batch(torch.arange(len(data.test_labels)))
        errors = torch.stack([(images - nets[f"class_{k}"](images)).flatten(1).norm(dim=1) for k in range(classes)], 1)
    own = errors.gather(1, labels[:, None]).squeeze(1)
    others = (errors.sum(1) - own) / (classes - 1)
    print(f"{folder}: {len(labels)} test images; reconstruction error by the own class's autoencoder "
          f"{own.mean():.3f}, by the other classes' {others.mean():.3f} (ratio {(own / others).mean():.3f}); "
          f"the own class's is the best for {100 * (errors.argmin(1) == labels).float().mean():.1f}% of the images "
          f"(chance {100 / classes:.1f}%)")


if __name__ == "__main__":
    main()
