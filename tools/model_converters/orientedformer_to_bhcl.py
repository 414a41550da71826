"""Convert a checkpoint of the published BHCL / OrientedFormer code to bhcl.

    python tools/model_converters/orientedformer_to_bhcl.py PUBLISHED_CKPT OUT_DIR
        [--config PUBLISHED_CONFIG.py] [--label-tree TREE] [--name NAME]

PUBLISHED_CKPT is a checkpoint written by the published code (``state_dict``
with its key names). Its model config is read from the checkpoint's
``meta['cfg']`` (mmengine stores the config text there) or from ``--config``
(the published ``.py`` file, e.g. ``projects/BHCL/configs/shiprs_bhcl_decoupled_6x.py``).
Either way the config's ``custom_imports`` (the published package) are not
imported: nothing of the published code is needed. ``--label-tree`` is needed
when the config has no ``hcl_loss.hierarchical_labels`` (the baselines): a
bhcl label-tree config such as ``configs/_base_/datasets/shiprs_label_tree.py``
or a tree JSON file.

OUT_DIR receives ``<name>.pth`` (bhcl weights, loadable by ``tools/test.py``
with the matching ``configs/orientedformer`` / ``configs/bhcl`` config or with
the model config below) and ``<name>_model.py`` (the converted model config,
its label tree an ordered ``paths`` list). The checkpoint records the class
order it was made for; loading it into a model whose label tree has another
order fails and shows both. The converted model is built and the weights
loaded strictly before anything is written.
"""
import sys

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.models.published import convert_published_config, convert_published_state_dict
from bhcl.models.published_converter import convert_published_checkpoint


def main(argv=None) -> int:
    return convert_published_checkpoint(argv, __doc__.split('\n')[0], convert_published_config,
                                        convert_published_state_dict)


if __name__ == '__main__':
    sys.exit(main())
