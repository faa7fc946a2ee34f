# CrossFormer-L on ImageNet-1K (mmpretrain); recipe as crossformer_s_in1k.py.
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5),
    head=dict(in_channels=1024))
