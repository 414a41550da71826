# Prototype ablation: BHCL's balanced denominator without prototypes.
_base_ = ['./bhcl-decoupled_orientedformer-r50_4xb2-12e_fair1m-v2.py']

model = dict(loss_hcl=dict(prototype_bank=None))
