"""Dynamic position bias (DPB)."""
from typing import NamedTuple, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from .caching import capturing_graph, eager_lru_cache


@eager_lru_cache(maxsize=256)
def relative_tables(group_h: int, group_w: int, device: torch.device
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a ``group_h x group_w`` group's bias is gathered with.

    Cached per shape and device in eager mode (shared by every block; an
    entry is a few KB, so 256 group shapes stay well under a megabyte
    whatever sizes a run sees), computed inline while a graph is captured
    (:func:`~.caching.eager_lru_cache`).

    Returns:
        tuple: ``offsets`` ``((2Gh-1) * (2Gw-1), 2)`` float, every offset
        ``(dy, dx)`` a pair of embeddings can have, row-major; ``rows``
        ``(Gh * Gh,)``, the ``dy`` row (``yq - yk + Gh - 1``) of each pair of
        rows ``(yq, yk)``; ``cols`` ``(Gw * Gw,)``, likewise for columns.
        Per-axis indices keep the tables O(Gh^2 + Gw^2) instead of the
        O((Gh*Gw)^2) of one pairwise index (8.8 MB for a 25x42 group).
    """
    dy = torch.arange(1 - group_h, group_h, device=device)
    dx = torch.arange(1 - group_w, group_w, device=device)
    offsets = torch.stack(
        torch.meshgrid(dy, dx, indexing='ij'), dim=-1).reshape(-1, 2).float()
    ys = torch.arange(group_h, device=device)
    xs = torch.arange(group_w, device=device)
    rows = (ys[:, None] - ys[None, :] + group_h - 1).flatten()
    cols = (xs[:, None] - xs[None, :] + group_w - 1).flatten()
    return offsets, rows, cols


class RelativeBias(NamedTuple):
    """The DPB bias of a ``group_h x group_w`` group as its table of
    offsets: the bias of a query ``(yq, xq)`` and a key ``(yk, xk)`` is
    ``table[:, yq - yk + Gh - 1, xq - xk + Gw - 1]``.

    Attributes:
        table (Tensor): ``(heads, 2Gh-1, 2Gw-1)``, contiguous.
        group_h (int): ``Gh``.
        group_w (int): ``Gw``.
    """
    table: torch.Tensor
    group_h: int
    group_w: int

    @property
    def length(self) -> int:
        """Embeddings per group, ``N = Gh * Gw``."""
        return self.group_h * self.group_w

    def dense(self) -> torch.Tensor:
        """The bias of every (query, key) pair, row-major in the group:
        ``(heads, N, N)``, gathered one axis at a time (differentiable)."""
        heads = self.table.shape[0]
        gh, gw = self.group_h, self.group_w
        _, rows, cols = relative_tables(gh, gw, self.table.device)
        # (heads, dy, dx) -> (heads, yq*yk, xq*xk) -> (heads, yq, xq, yk, xk)
        bias = self.table.index_select(1, rows).index_select(2, cols)
        bias = bias.view(heads, gh, gh, gw, gw)
        return bias.permute(0, 1, 3, 2, 4).reshape(heads, self.length,
                                                   self.length)

    def keys_reversed(self) -> torch.Tensor:
        """The bias with the keys in reverse order, as a view of the table:
        ``(heads, Gh, Gw, Gh, Gw)``, entry ``[h, yq, xq, yr, xr]`` for the
        key ``(Gh-1-yr, Gw-1-xr)``.

        Reversing the keys turns the offset ``yq - yk + Gh - 1`` into
        ``yq + yr``, so each pair reads the table at ``(yq + yr, xq + xr)``:
        strides ``(2Gw-1, 1)`` along both the query and the key axes. No
        ``(heads, N, N)`` tensor is made; :meth:`table_gradient` is the
        adjoint.
        """
        heads, row, col = self.table.stride()
        return self.table.as_strided(
            (self.table.shape[0], self.group_h, self.group_w, self.group_h,
             self.group_w), (heads, row, col, row, col),
            self.table.storage_offset())

    def table_gradient(self, grad: torch.Tensor,
                       keys_reversed: bool = True) -> torch.Tensor:
        """Adjoint of :meth:`keys_reversed` (or of :meth:`dense` if
        ``keys_reversed`` is False): the ``(h, N, N)`` gradient of the bias
        of ``h`` heads summed into ``(h, 2Gh-1, 2Gw-1)``, the pairs of each
        offset added up.

        With the keys reversed, the pair ``(yq, xq), (yr, xr)`` reads the
        table at ``(yq + yr, xq + xr)``: the query's row of the gradient,
        a ``Gh x Gw`` patch, is added into the table at ``(yq, xq)``, the
        col2im of ``F.fold`` (the query as the kernel offset, the key as the
        patch position; a sum, so the roles can be swapped). No per-pair
        index is made (7.2 MB of int64 for a 25x38 group).
        """
        gh, gw = self.group_h, self.group_w
        heads = grad.shape[0]
        if not keys_reversed:
            # Reversing the flattened key index reverses both its axes.
            grad = grad.flip(-1)
        return F.fold(grad.reshape(heads, self.length, self.length),
                      (2 * gh - 1, 2 * gw - 1), (gh, gw)).view(
                          heads, 2 * gh - 1, 2 * gw - 1)


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
        # Inference only: the MLP's output per group shape, keyed also by the
        # parameters' storage and version counters, which every in-place
        # update (optimizer step, load_state_dict) and every move or cast
        # changes; so a cached value is always what the MLP would return.
        self._outputs: dict = {}

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """Map offsets ``(..., 2)`` to biases ``(..., num_heads)``."""
        x = self.proj(offsets)
        for layer in self.layers:
            x = layer(x)
        return x

    def relative_bias(self, group_h: int, group_w: int) -> RelativeBias:
        """The bias of a ``group_h x group_w`` group as a
        :class:`RelativeBias`: the MLP runs once on the ``(2Gh-1) *
        (2Gw-1)`` distinct offsets (in inference, once per group shape and
        weights; see ``_cached_output``)."""
        offsets, _, _ = relative_tables(group_h, group_w,
                                        self.proj.weight.device)
        if torch.is_grad_enabled() or capturing_graph():
            # (FLOP counters trace the model: they must see the MLP run.)
            bias = self(offsets.to(self.proj.weight.dtype))  # (T, heads)
        else:
            bias = self._cached_output(group_h, group_w, offsets)
        table = bias.t().reshape(self.num_heads, 2 * group_h - 1,
                                 2 * group_w - 1)
        return RelativeBias(table, group_h, group_w)

    def group_bias(self, group_h: int, group_w: int) -> torch.Tensor:
        """The bias of every (query, key) pair in a ``group_h x group_w``
        group, row-major: ``(num_heads, Gh*Gw, Gh*Gw)``."""
        return self.relative_bias(group_h, group_w).dense()

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
        # The cache is derived data: do not pickle or deepcopy it.
        state = self.__dict__.copy()
        state['_outputs'] = {}
        return state
