# + decoupling (the BHCL paper's RHINO column): classification and localisation
# queries share the self-attention and have their own rotated cross-attention and
# FFN around the same reference box.
_base_ = ['./rhino_r50_4xb2-36e_fair1m-v2.py']

model = dict(decoder=dict(layer_cfg=dict(type='DecoupledRotatedDecoderLayer')))
