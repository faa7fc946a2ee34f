"""The reduced CrossFormer arches of the tests (``arch=dict(...)``)."""

# The arch of the official parity checkpoint and its recorded outputs
# (../shared/reference/crossformer_parity.pt): fixed by that data.
PARITY_ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])

# The backbone of every shrunk detector and segmentor: one block per stage,
# channels 32, 64, 128, 256. embed_dims 32 keeps the DPB's width
# (embed_dims // 16) at 2: at width 1 its LayerNorms output a constant and
# the DPB would get no gradient.
TINY_ARCH = dict(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4])
