"""Memory Wrap in one import: load a trained model and explain new images, or put the layer into a network of yours.

    from memory_wrap import load_model
    model = load_model("model.pt")                       # export.py's file (or a checkpoint and its dataset)
    model.predict(["photo.jpg"])                         # [Prediction(image, predicted, probability, probabilities)]
    [explained] = model.explain("photo.jpg", memory="pool", heatmap=True)
    explained.example.source, [sample.source for sample in explained.decisive], explained.heatmap.shape

    from memory_wrap import MemoryWrapLayer              # instead of nn.Linear(features, classes): docs/layer.md

The code lives in the library (explanations/model.py, architectures/memory.py); this module imports nothing that
reads command-line flags. docs/own_data.md shows it at work.
"""
from architectures.memory import MemoryWrapLayer
from core.memory_policies import POLICIES as MEMORY_POLICIES
from explanations.model import Explanations, Model, Prediction, load_model
from explanations.new_images import Explained, MemorySample

__all__ = ["load_model", "Model", "Prediction", "Explained", "MemorySample", "Explanations", "MEMORY_POLICIES",
           "MemoryWrapLayer"]
