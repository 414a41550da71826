# BHCL on the decoupled synthetic model: balanced denominator and an EMA
# prototype bank per stage, one warm-up epoch of standard HCL.
_base_ = ['./hcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py']

model = dict(
    loss_hcl=dict(balance=True, prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.1),
                  warmup_epochs=1))
