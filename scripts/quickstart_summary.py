"""The end of `make demo`: std and Memory Wrap's accuracies side by side, where the checkpoints are, what next."""
import json
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "models") / "DIGITS"
FOLDER = "shufflenet/1000"


def accuracy(modality: str) -> str:
    path = ROOT / modality / FOLDER / "results.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: run `make demo` (it trains both models first)")
    results = json.loads(path.read_text())
    runs = results["runs"]
    return f"{results['mean']:.2f}" + (f" (mean of {len(runs)} runs)" if len(runs) > 1 else "")


checkpoint = ROOT / "encoder_memory" / FOLDER / "1.pt"
print(f"""
Quickstart: DIGITS (real handwritten digits), ShuffleNetV2, 1000 training images, 12 epochs, test accuracy (%)
  std (a linear head)                 {accuracy('std')}
  Memory Wrap (encoder_memory)        {accuracy('encoder_memory')}
Checkpoints: {ROOT / 'std' / FOLDER}/1.pt and {checkpoint}

Next:
  explain new images:  .venv/bin/python predict.py --path_model={checkpoint} docs/examples/digits/ --output=explained/
  see every run:       .venv/bin/python report.py --root=models --output=report/   (then open report/index.html)
  your own images:     .venv/bin/python train.py --config=config/folder.yaml --dataset_dir=DIR --modality=encoder_memory
""")
