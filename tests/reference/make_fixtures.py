"""Regenerate tests/reference/fixtures.json: the outputs of the reference implementations on fixed seeds and inputs,
which tests/test_references.py compares ours with. The reference code is never part of this repository: the script
reads the functions and classes it needs from checkouts of the reference repositories, given as folders.

    python tests/reference/make_fixtures.py --memory_wrap=DIR --simple_self_attention=DIR --vit_cifar=DIR \\
        --torch_prototypes=DIR

    --memory_wrap            KRLGroup/memory-wrap (paper/scripts/run_matching.py, paper/utils/utils.py,
                             paper/utils/counterfactuals_utils.py)
    --simple_self_attention  sdoria/SimpleSelfAttention (xresnet.py)
    --vit_cifar              omihub777/ViT-CIFAR (vit.py, layers.py)
    --torch_prototypes       VSainteuf/metric-guided-prototypes-pytorch (torch_prototypes/...)

Only the named top-level definitions are taken from each file (so that the files' imports of torchvision, fastai,
CUDA... are never run); ``.cuda()`` calls are made no-ops, since the fixtures are computed on a CPU.
"""
import argparse
import ast
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FIXTURES = Path(__file__).resolve().parent / "fixtures.json"


def definitions(path: Path, names, namespace: dict) -> dict:
    """Execute the top-level definitions ``names`` of the file ``path`` in ``namespace`` (and return it)."""
    tree = ast.parse(path.read_text())
    chosen = [node for node in tree.body if getattr(node, "name", None) in names or (
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets))]
    missing = set(names) - {getattr(n, "name", None) or n.targets[0].id for n in chosen}
    if missing:
        raise SystemExit(f"{path} does not define {sorted(missing)}: is it the right repository?")
    exec(compile(ast.Module(chosen, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def plain(value):
    """Tensors as nested lists (float32 values), for JSON."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().tolist() if value.dtype.is_floating_point else value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def matching(root: Path) -> dict:
    script = root / "paper" / "scripts" / "run_matching.py"
    namespace = definitions(script, {"BidrectionalLSTM", "AttentionLSTM"}, {"torch": torch, "nn": nn})
    definitions(root / "paper" / "utils" / "utils.py", {"vector_distance", "_EPSILON"}, namespace)
    torch.manual_seed(0)
    dim, memory_size, batch, classes = 6, 7, 4, 3
    g, f = namespace["BidrectionalLSTM"](dim, 1), namespace["AttentionLSTM"](dim, 2)
    queries, memory = torch.randn(batch, dim), torch.randn(memory_size, dim)
    memory_labels, labels = torch.tensor([0, 1, 2, 0, 1, 2, 0]), torch.tensor([0, 2, 1, 1])
    support = g(memory.unsqueeze(1))[0].squeeze(1)
    embedded = f(support, queries)
    attention = (-namespace["vector_distance"](embedded, support, "cosine")).softmax(dim=1)
    prediction = attention @ F.one_hot(memory_labels, classes).float()
    log_prediction = prediction.clamp(1e-6, 1 - 1e-6).log()  # the script's _EPSILON
    return {"g": plain(g.lstm.state_dict()), "f": plain(f.lstm_cell.state_dict()), "queries": plain(queries),
            "memory": plain(memory), "memory_labels": plain(memory_labels), "labels": plain(labels),
            "log_prediction": plain(log_prediction), "attention": plain(attention),
            "loss": F.nll_loss(log_prediction, labels).item(), "classes": classes}


def simple_self_attention(root: Path) -> dict:
    namespace = definitions(root / "xresnet.py", {"conv1d", "SimpleSelfAttention"},
                            {"torch": torch, "nn": nn, "spectral_norm": nn.utils.spectral_norm, "tensor": torch.tensor})
    out = {}
    for sym in (False, True):
        torch.manual_seed(0)
        block = namespace["SimpleSelfAttention"](4, ks=1, sym=sym)
        block.gamma.data.fill_(0.5)
        x = torch.randn(2, 4, 3, 3)
        state = plain(block.state_dict())
        train_output = block.train()(x)  # one power iteration of spectral norm
        eval_output = block.eval()(x)
        out["sym" if sym else "plain"] = {"state_dict": state, "x": plain(x), "train_output": plain(train_output),
                                          "eval_output": plain(eval_output)}
    return out


def vit(root: Path) -> dict:
    namespace = definitions(root / "layers.py", {"TransformerEncoder", "MultiHeadSelfAttention"},
                            {"torch": torch, "nn": nn, "F": F})
    definitions(root / "vit.py", {"ViT"}, namespace)
    torch.manual_seed(0)
    settings = {"hidden": 16, "head": 4, "mlp_hidden": 16, "num_layers": 2, "patch": 8, "num_classes": 3}
    net = namespace["ViT"](in_c=3, num_classes=3, img_size=32, patch=8, dropout=0.0, num_layers=2, hidden=16,
                           mlp_hidden=16, head=4, is_cls_token=True).eval()
    x = torch.randn(2, 3, 32, 32)
    return {"settings": settings, "state_dict": plain(net.state_dict()), "x": plain(x), "logits": plain(net(x))}


def soft_labels(root: Path) -> dict:
    source = root / "torch_prototypes" / "modules" / "softlabels.py"
    namespace = definitions(source, {"SoftCrossEntropy"}, {"torch": torch, "nn": nn})
    costs = torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 0])
    loss = namespace["SoftCrossEntropy"](costs, beta=2.0)
    targets = torch.softmax(-2.0 * loss.D[labels], dim=-1)
    return {"costs": plain(costs), "beta": 2.0, "logits": plain(logits), "labels": plain(labels),
            "targets": plain(targets), "loss": loss(logits, labels).item()}


def cfproto_step(root: Path) -> dict:
    names = {"compute_l1_loss", "compute_l2_loss", "compute_proto_loss", "update_adv", "update_adv_s"}
    namespace = definitions(root / "paper" / "utils" / "counterfactuals_utils.py", names, {"torch": torch})
    torch.manual_seed(0)
    encoder = nn.Conv2d(3, 1, 3, padding=1)
    original = torch.randn(2, 3, 4, 4)
    adv = original + 0.3 * torch.randn_like(original)
    adv_s = (original + 0.3 * torch.randn_like(original)).requires_grad_(True)
    prototype = torch.randn(2, 1, 4, 4)
    beta, theta, rate, step = 0.1, 100.0, 0.1, 0
    l1 = namespace["compute_l1_loss"](original - adv_s, original.shape)
    l2 = namespace["compute_l2_loss"](original - adv_s, original.shape)
    proto = namespace["compute_proto_loss"](encoder, adv_s, prototype, theta)
    (beta * l1 + l2 + proto).sum().backward()
    gradient = adv_s.grad.clamp(-1000, 1000)
    feature_range = (torch.tensor(-1.5), torch.tensor(1.5))
    with torch.no_grad():
        stepped = adv_s - gradient * rate * (1 - step / 1000) ** 0.5
        new_adv = namespace["update_adv"](stepped, original, beta, feature_range)
        new_adv_s = namespace["update_adv_s"](new_adv, adv, torch.tensor(float(step + 1)), feature_range)
    return {"encoder": plain(encoder.state_dict()), "original": plain(original), "adv": plain(adv),
            "adv_s": plain(adv_s), "prototype": plain(prototype), "l1": plain(l1), "l2": plain(l2),
            "proto": plain(proto), "gradient": plain(gradient), "new_adv": plain(new_adv),
            "new_adv_s": plain(new_adv_s), "feature_range": [-1.5, 1.5]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("memory_wrap", "simple_self_attention", "vit_cifar", "torch_prototypes"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    torch.Tensor.cuda = lambda self, *a, **k: self  # the references call .cuda(); the fixtures are CPU numbers
    torch.set_num_threads(1)
    fixtures = {"matching": matching(args.memory_wrap), "simple_self_attention": simple_self_attention(
        args.simple_self_attention), "vit": vit(args.vit_cifar), "soft_labels": soft_labels(args.torch_prototypes),
        "cfproto_step": cfproto_step(args.memory_wrap)}
    FIXTURES.write_text(json.dumps(fixtures) + "\n")
    print(f"Written: {FIXTURES} ({FIXTURES.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
