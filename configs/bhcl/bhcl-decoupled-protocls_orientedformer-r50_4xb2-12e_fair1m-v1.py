# Prototype ablation: the classifier weights (through the projection head) as prototypes.
_base_ = ['./bhcl-decoupled_orientedformer-r50_4xb2-12e_fair1m-v1.py']

model = dict(loss_hcl=dict(prototype_bank=dict(_delete_=True, type='ClassifierPrototypeBank')))
