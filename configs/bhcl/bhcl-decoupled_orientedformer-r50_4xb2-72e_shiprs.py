# + decoupling + BHCL (the paper's full model): balanced denominator and an EMA
# prototype bank per stage, standard HCL for the first 5 warm-up epochs.
_base_ = ['./hcl-decoupled_orientedformer-r50_4xb2-72e_shiprs.py']

model = dict(
    loss_hcl=dict(balance=True, prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.1),
                  warmup_epochs=5))
