"""LRP as composable pieces, after zennit's design: rules (how one layer hands relevance to its
input), composites (which rule each layer gets), canonizer-like steps (BatchNorm folding, the
ResNet relevance split), the engine (tracing and the relevance pass) and the registered methods.
Importing this package registers the methods."""

from saliencybench.attributions.lrp.composites import Composite, LRPConfig, composite_for
from saliencybench.attributions.lrp.engine import LRPResult, LRPUnsupportedModel, lrp_relevance, trace_model
from saliencybench.attributions.lrp.methods import lrp, lrp_for_resnet, lrp_resnet_with_checkpoints

__all__ = [
    "Composite", "LRPConfig", "LRPResult", "LRPUnsupportedModel", "composite_for", "lrp", "lrp_for_resnet",
    "lrp_relevance", "lrp_resnet_with_checkpoints", "trace_model",
]
