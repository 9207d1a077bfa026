"""Where SimpleSelfAttention trains: the first steps of train.py's step (SGD, the paper's settings but the learning
rate) with the block at each position, DIGITS, 1000 training images, batch 64, memory 100, fp32, seed 0; a run
'diverges' when its loss is no longer finite within --steps steps, 'explodes' when it ends above 10 times its first. The block's term gamma (x x^T) conv(x) is about a
hundred times its input at a network's last stage; where nothing normalises the block's output before the features
(ResNet-18's layer4, GoogLeNet's b5), the first small step of gamma multiplies the features and the loss explodes.

    python -m bench.self_attention_stability                      # 5 networks x reference, last_stage; lr 0.05
    python -m bench.self_attention_stability --networks=resnet18 --positions=last_stage,layer4.0,layer3 --lrs=0.05,0.005
"""
import argparse
import datetime
import math

import torch

import datasets
from architectures import build_model
from core import runtime, training
from core.config import load_config

EXPLODED = 10.0  # a loss this many times the first one's after the steps: exploding, though still finite


def first_steps(network: str, position: str, learning_rate: float, steps: int):
    """(steps taken, the first loss, the last finite loss)."""
    torch.manual_seed(0)
    config = load_config("config/digits.yaml", {}, [f"optimizer.learning_rate={learning_rate}"])
    model = build_model(network, "encoder_memory", 10, self_attention=position).train()
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 1000, 200, seed=0,
                                         mem_examples=100)
    optimizer = training.make_optimizer(model, config.optimizer)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    fp32 = runtime.Execution(None, torch.contiguous_format)
    generator, first, loss = torch.Generator().manual_seed(0), None, float("nan")
    for step, (images, labels) in enumerate(data.batches(64, generator), start=1):
        value, _ = training.training_step(model, optimizer, scaler, images, labels, data.memory_set(generator), fp32,
                                          torch.device("cpu"))
        if not math.isfinite(value.item()):
            return step, first, loss
        loss = value.item()
        first = loss if first is None else first
        if step == steps:
            return step, first, loss
    return step, first, loss


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default="resnet18,mobilenet,googlenet,densenet,efficientnet")
    parser.add_argument("--positions", default="reference,last_stage")
    parser.add_argument("--lrs", default="0.05")
    parser.add_argument("--steps", type=int, default=15, help="steps (one epoch of 1000 images is 15)")
    args = parser.parse_args()
    machine = runtime.describe_machine(torch.device("cpu"))
    print(f"Machine: {machine['cpu']} | CPU capability {machine['cpu_capability']} | torch {machine['torch']} | "
          f"{datetime.date.today()}\n")
    print(f"| network | position | learning rate | after {args.steps} steps |\n|---|---|---|---|")
    for network in args.networks.split(","):
        for position in args.positions.split(","):
            for learning_rate in (float(lr) for lr in args.lrs.split(",")):
                step, first, loss = first_steps(network, position, learning_rate, args.steps)
                if step < args.steps:
                    verdict = f"**diverges**: no finite loss at step {step}"
                elif loss > EXPLODED * first:
                    verdict = f"**explodes**: loss {first:.2f} at step 1, {loss:.3g} at step {step}"
                else:
                    verdict = f"trains: loss {first:.2f} at step 1, {loss:.2f} at step {step}"
                print(f"| {network} | {position} | {learning_rate:g} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
