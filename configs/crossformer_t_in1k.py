# CrossFormer-T on ImageNet-1K (mmpretrain); recipe as crossformer_s_in1k.py.
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1),
    head=dict(in_channels=512))
