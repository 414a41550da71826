"""Convert a checkpoint of the published RHINO code (SIAnalytics/RHINO) to bhcl.

    python tools/model_converters/rhino_to_bhcl.py PUBLISHED_CKPT OUT_DIR
        [--config PUBLISHED_CONFIG.py] [--label-tree TREE] [--name NAME]

PUBLISHED_CKPT is a checkpoint written by the published code (``state_dict``
with its key names; bhcl's RHINO keeps them). Its model config is read from
``--config`` (the published ``.py`` file, e.g.
``configs/rhino/rhino_phc_haus-4scale_r50_2xb2-36e_dota.py``) or, without it,
from the checkpoint's ``meta['cfg']`` (mmengine stores the config there); in
neither case are its ``custom_imports`` executed. ``--label-tree`` (a bhcl
label-tree config ``.py`` with ``label_tree = dict(...)`` or a tree JSON) is
optional: RHINO's classes are flat, a tree only makes bhcl's inference
tree-aware; its node count must be the published ``num_classes``.

OUT_DIR receives ``<name>.pth`` (bhcl weights) and ``<name>_model.py`` (the
converted model config, a label tree written as an ordered ``paths`` list). With a
tree, the checkpoint records its class order, and loading it into a model whose
tree has another order fails and shows both. The converted model is built and the
weights loaded strictly (every missing, unknown or mis-shaped key is listed) before
anything is written; the written pair is then loaded back as the Runner would.
"""
import sys

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.models.published_converter import convert_published_checkpoint
from bhcl.models.published_rhino import (convert_published_rhino_config,
                                         convert_published_rhino_state_dict)


def main(argv=None) -> int:
    return convert_published_checkpoint(argv, __doc__.split('\n')[0],
                                        convert_published_rhino_config,
                                        convert_published_rhino_state_dict)


if __name__ == '__main__':
    sys.exit(main())
