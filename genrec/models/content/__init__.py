"""Content-based recommendation (Legommenders-style): content operator x behavior operator x click predictor.

See :mod:`genrec.models.content.model` for the composition, training and the evaluation cache, and
:mod:`genrec.models.content.lm` for the language-model operator and its on-disk layer cache.
"""

from genrec.models.content.behavior_ops import (AdditiveBehavior, BehaviorOperator, FastformerBehavior, GRUBehavior,
                                                MeanBehavior, TransformerBehavior)
from genrec.models.content.content_ops import AttentionContent, CNNContent, ContentOperator, FastformerContent
from genrec.models.content.lm import PretrainedLMContent, layer_cache_key
from genrec.models.content.model import (BEHAVIOR_OPERATORS, CONTENT_OPERATORS, PREDICTORS, ContentRecommender,
                                         resolve_operator)
from genrec.models.content.predictors import DCNPredictor, DeepFMPredictor, DINPredictor, DotPredictor, Predictor

__all__ = ["AdditiveBehavior", "AttentionContent", "BEHAVIOR_OPERATORS", "BehaviorOperator", "CNNContent",
           "CONTENT_OPERATORS", "ContentOperator", "ContentRecommender", "DCNPredictor", "DINPredictor",
           "DeepFMPredictor", "DotPredictor", "FastformerBehavior", "FastformerContent", "GRUBehavior",
           "MeanBehavior", "PREDICTORS", "Predictor", "PretrainedLMContent", "TransformerBehavior",
           "layer_cache_key", "resolve_operator"]
