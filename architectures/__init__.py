"""Encoders, heads, and one composition for every modality (re-exports only; the code lives in the modules).

    registry.py           register_encoder / register_head, create_encoder / build_head
    classifier.py         Classifier(encoder, head), build_model
    heads.py              the paper's heads: std, memory, encoder_memory
    protonet.py, matching.py, prototypes.py (prototypes, hyperspherical), deepncm.py
                          the related methods' heads; metric_guidance.py: their class-metric losses
    memory.py             MemoryWrapLayer, BaselineMemory, sparsemax (stand-alone: copy it into your project)
    self_attention.py     SimpleSelfAttention, an encoder option
    paper_checkpoints.py  the paper's state-dict layout <-> ours
    timm_backbone.py      timm/<name>: any timm model as an encoder; local weights files
    <network>.py          one encoder each (or a family: resnet18 and resnet34), registered by name

Importing this package registers every encoder and head (the lines below).
"""
from . import densenet, efficientnet, googlenet, mobilenet, resnet, shufflenet, vit, wide_resnet  # noqa: F401  (encoders)
from . import heads, protonet, matching, prototypes, deepncm  # noqa: F401  (heads, in this order)
from .classifier import Classifier, build_model
from .memory import DISTANCES, MLP, BaselineMemory, MemoryWrapLayer, pairwise_distance, sparsemax
from .paper_checkpoints import describe_mismatch, is_paper_state_dict, load_paper_state_dict, to_paper_state_dict
from .registry import (build_head, create_encoder, encoder_problem, head_entry, list_encoders, list_heads,
                       register_encoder, register_head)
from .self_attention import SimpleSelfAttention, insert_self_attention

__all__ = [
    "Classifier", "build_model", "build_head", "head_entry", "list_heads", "register_head",
    "create_encoder", "encoder_problem", "list_encoders", "register_encoder",
    "load_paper_state_dict", "to_paper_state_dict", "is_paper_state_dict", "describe_mismatch",
    "MemoryWrapLayer", "BaselineMemory", "MLP", "sparsemax", "pairwise_distance", "DISTANCES",
    "SimpleSelfAttention", "insert_self_attention",
]
