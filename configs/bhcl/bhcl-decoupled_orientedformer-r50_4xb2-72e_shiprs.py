# + decoupling + BHCL (the paper's full model): balanced denominator and an EMA
# prototype bank per stage (epsilon 0.1), standard HCL for the first 5 warm-up
# epochs. The published behaviour: prototypes of a node's subtree count as its
# instances, and rows are used before their class is seen.
_base_ = ['./hcl-decoupled_orientedformer-r50_4xb2-72e_shiprs.py']

model = dict(
    loss_hcl=dict(balance=True, prototype_scope='subtree', warmup_epochs=5,
                  prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.1,
                                      hide_unseen=False)))
