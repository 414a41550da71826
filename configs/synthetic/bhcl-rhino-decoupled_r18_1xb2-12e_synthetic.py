# BHCL on the decoupled CPU-sized RHINO: balanced denominator and an EMA prototype
# bank per decoder layer, one warm-up epoch of standard HCL.
_base_ = ['./hcl-rhino-decoupled_r18_1xb2-12e_synthetic.py']

model = dict(
    loss_hcl=dict(balance=True, prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.1),
                  warmup_epochs=1))
