"""Dynamic position bias (DPB)."""
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule


class DynamicPositionBias(BaseModule):
    """An MLP from a relative offset ``(dy, dx)`` to one bias per head (DPB,
    section 3.3 of the paper).

    ``Linear(2, d) -> [LayerNorm, ReLU, Linear] x 3`` (the last Linear has
    ``num_heads`` outputs), non-residual as in the official model. Because no
    weight depends on the group shape, the same weights serve any group size,
    interval and image size. At ``d = 1`` (``embed_dims < 32``) the LayerNorms
    map every offset to the same value, so the bias is a constant, as in the
    official model.

    Args:
        hidden_dims (int): Width ``d`` of the MLP (``embed_dims // 16`` in
            CrossFormer).
        num_heads (int): Number of attention heads.
    """

    def __init__(self, hidden_dims: int, num_heads: int, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_heads = num_heads
        self.proj = nn.Linear(2, hidden_dims)
        out_dims = (hidden_dims, hidden_dims, num_heads)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden_dims), nn.ReLU(inplace=True),
                nn.Linear(hidden_dims, dims)) for dims in out_dims)
        # (group_h, group_w, device) -> (offsets, index); derived from the
        # group shape only, so caching never changes results.
        self._tables: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}
        # Inference only: the MLP's output per group shape, keyed also by the
        # parameters' storage and version counters, which every in-place
        # update (optimizer step, load_state_dict) and every move or cast
        # changes; so a cached value is always what the MLP would return.
        self._outputs: Dict[tuple, tuple] = {}

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """Map offsets ``(..., 2)`` to biases ``(..., num_heads)``."""
        x = self.proj(offsets)
        for layer in self.layers:
            x = layer(x)
        return x

    def _offset_tables(self, group_h: int, group_w: int, device):
        key = (group_h, group_w, str(device))
        if key not in self._tables:
            # Every offset a pair of embeddings in the group can have,
            # ((2Gh-1)*(2Gw-1), 2), row-major over (dy, dx).
            dy = torch.arange(1 - group_h, group_h, device=device)
            dx = torch.arange(1 - group_w, group_w, device=device)
            offsets = torch.stack(
                torch.meshgrid(dy, dx, indexing='ij'), dim=-1).reshape(-1, 2)
            # For each (query, key) pair, the row of its offset in `offsets`.
            ys, xs = torch.meshgrid(
                torch.arange(group_h, device=device),
                torch.arange(group_w, device=device),
                indexing='ij')
            ys, xs = ys.flatten(), xs.flatten()
            rel_y = ys[:, None] - ys[None, :] + group_h - 1
            rel_x = xs[:, None] - xs[None, :] + group_w - 1
            index = (rel_y * (2 * group_w - 1) + rel_x).flatten()
            self._tables[key] = (offsets.float(), index)
        return self._tables[key]

    def group_bias(self, group_h: int, group_w: int) -> torch.Tensor:
        """The bias of every (query, key) pair in a ``group_h x group_w``
        group, row-major.

        The MLP runs once on the ``(2Gh-1) * (2Gw-1)`` distinct offsets, then
        the results are gathered for the ``(Gh*Gw)^2`` pairs.

        Returns:
            Tensor: ``(num_heads, Gh*Gw, Gh*Gw)``.
        """
        offsets, index = self._offset_tables(group_h, group_w,
                                             self.proj.weight.device)
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            # (FLOP counters trace the model: they must see the MLP run.)
            bias = self(offsets.to(self.proj.weight.dtype))  # (T, heads)
        else:
            bias = self._cached_output(group_h, group_w, offsets)
        n = group_h * group_w
        return bias.t().index_select(1, index).view(self.num_heads, n, n)

    def _cached_output(self, group_h, group_w, offsets, max_entries=8):
        params = tuple(self.parameters())
        key = (group_h, group_w, torch.get_autocast_dtype(
            offsets.device.type) if torch.is_autocast_enabled(
                offsets.device.type) else None,
               tuple((p.data_ptr(), p.dtype, p._version) for p in params))
        if key not in self._outputs:
            if len(self._outputs) >= max_entries:
                self._outputs.pop(next(iter(self._outputs)))
            # The entry holds the parameters too, so their storage cannot be
            # freed and reused by other tensors while the key names it.
            self._outputs[key] = (self(offsets.to(self.proj.weight.dtype)),
                                  params)
        return self._outputs[key][0]

    def __getstate__(self):
        # Tables are derived data: do not pickle or deepcopy them.
        state = self.__dict__.copy()
        state['_tables'] = {}
        state['_outputs'] = {}
        return state
