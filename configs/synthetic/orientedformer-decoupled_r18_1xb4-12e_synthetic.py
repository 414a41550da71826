# The synthetic baseline with decoupled classification / localization queries.
_base_ = ['./orientedformer_r18_1xb4-12e_synthetic.py']

model = dict(decoder=dict(layer_cfg=dict(type='DecoupledQueryDecoderLayer')))
