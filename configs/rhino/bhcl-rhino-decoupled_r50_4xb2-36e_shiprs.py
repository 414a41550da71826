# + decoupling + BHCL on RHINO (shiprs): the balanced loss and EMA prototype bank
# of the OrientedFormer column, same settings (configs/bhcl/bhcl-decoupled_
# orientedformer-r50_4xb2-72e_shiprs.py).
_base_ = ['./hcl-rhino-decoupled_r50_4xb2-36e_shiprs.py']

model = dict(
    loss_hcl=dict(balance=True, prototype_scope='subtree', warmup_epochs=5,
                  prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.1,
                                      hide_unseen=False)))
