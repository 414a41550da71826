# The paper's full model (decoupling + BHCL) fine-tuned from a MutDet
# pre-training checkpoint (configs/mutdet/mutdet-pretrain_*), converted with
#   python tools/model_converters/mutdet_to_finetune.py PRETRAIN_CKPT THIS_CONFIG \
#       work_dirs/mutdet_r50_init.pth
# (docs/pretraining.md). The converted file holds the backbone too, so the
# ImageNet init_cfg is overridden by it.
_base_ = ['../bhcl/bhcl-decoupled_orientedformer-r50_4xb2-12e_fair1m-v1.py']
load_from = 'work_dirs/mutdet_r50_init.pth'
