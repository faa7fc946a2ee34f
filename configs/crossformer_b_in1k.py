# CrossFormer-B on ImageNet-1K (mmpretrain); recipe as crossformer_s_in1k.py.
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    head=dict(in_channels=768))
