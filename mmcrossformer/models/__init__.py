from .attention import GroupAttention
from .block import CrossFormerBlock
from .crossformer import CrossFormer, CrossFormerStage
from .embedding import CrossScaleEmbedding
from .position_bias import DynamicPositionBias

__all__ = [
    'CrossFormer', 'CrossFormerStage', 'CrossFormerBlock', 'GroupAttention',
    'CrossScaleEmbedding', 'DynamicPositionBias'
]
