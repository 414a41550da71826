# BHCL fine-tuning of the synthetic model from a MutDet pre-training checkpoint
# converted by tools/model_converters/mutdet_to_finetune.py (docs/pretraining.md):
#   python tools/model_converters/mutdet_to_finetune.py \
#       work_dirs/mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic/epoch_12.pth \
#       configs/mutdet/bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic_mutdet-init.py \
#       work_dirs/mutdet_synthetic_init.pth
_base_ = ['../synthetic/bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py']
load_from = 'work_dirs/mutdet_synthetic_init.pth'
