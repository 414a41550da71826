# + decoupling on the CPU-sized RHINO: classification and localisation queries
# share the self-attention and have their own rotated cross-attention and FFN.
_base_ = ['./rhino_r18_1xb4-12e_synthetic.py']

model = dict(decoder=dict(layer_cfg=dict(type='DecoupledRotatedDecoderLayer')))
