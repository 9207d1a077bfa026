"""CIFAR-10's official python batches written out as a folder dataset of your own: DIR/train/<class>/<file>_<index>.png
and DIR/test/<class>/test_batch_<index>.png, each image a real 32x32 PNG named by where it came from. The README's
picture is a model trained on such a folder (the own-data path, as a user with a folder of photos runs it).

    python -m scripts.cifar_folder --dataset_dir=../shared/data/cifar10-subset --output=cifar10_folder --train_per_class=100

--train_per_class / --test_per_class keep the first images of each class (in the batches' order); 0 keeps all.
"""
import argparse
from pathlib import Path

from PIL import Image

from readers import read_cifar10


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="the folder that holds cifar-10-batches-py/")
    parser.add_argument("--output", required=True, help="the folder dataset to write (must not exist)")
    parser.add_argument("--train_per_class", type=int, default=100)
    parser.add_argument("--test_per_class", type=int, default=0)
    args = parser.parse_args()
    output = Path(args.output)
    if output.exists():
        raise SystemExit(f"error: {output} exists: give a new folder")
    train, test = read_cifar10(Path(args.dataset_dir), download=False)
    for split, images, keep in (("train", train, args.train_per_class), ("test", test, args.test_per_class)):
        written = {name: 0 for name in images.classes}
        for index in range(len(images)):
            name = images.classes[int(images.labels[index])]
            if keep and written[name] >= keep:
                continue
            folder = output / split / name
            folder.mkdir(parents=True, exist_ok=True)
            batch, number = images.source(index).split(" ")[1:]
            Image.fromarray(images.images[index].permute(1, 2, 0).numpy()).save(
                folder / f"{batch}_{int(number.lstrip('#')):05d}.png")
            written[name] += 1
        print(f"{output / split}: {sum(written.values())} images ({', '.join(f'{k} {v}' for k, v in written.items())})")


if __name__ == "__main__":
    main()
