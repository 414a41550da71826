# + decoupling: classification and localization queries share the
# self-attention and have their own cross-attention and FFN.
_base_ = ['./orientedformer_r50_4xb2-12e_fair1m-v2.py']

model = dict(decoder=dict(layer_cfg=dict(type='DecoupledQueryDecoderLayer')))
