# + decoupling + BHCL on RHINO (fair1m-v1): the balanced loss and EMA prototype bank
# of the OrientedFormer column, same settings (configs/bhcl/bhcl-decoupled_
# orientedformer-r50_4xb2-12e_fair1m-v1.py).
_base_ = ['./hcl-rhino-decoupled_r50_4xb2-36e_fair1m-v1.py']

model = dict(
    loss_hcl=dict(balance=True, prototype_scope='subtree', warmup_epochs=5,
                  prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.001,
                                      hide_unseen=False)))
