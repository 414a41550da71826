"""bhcl.utils.class_order: trees keep their class order through written configs, checkpoints
record theirs and refuse a model of another order, stored configs read without their
custom imports."""
import importlib.util

import pytest
import torch
from mmengine.config import Config
from torch import nn

from bhcl.structures import LabelTree
from bhcl.utils.class_order import (CLASS_ORDER_KEY, ClassOrderError, ConfigReadError,
                                    check_class_order, check_label_trees_survive,
                                    checkpoint_config, converted_checkpoint, decode_class_order,
                                    dump_config, encode_class_order, guard_class_order,
                                    preserve_label_trees, read_config_text,
                                    recorded_class_order)

# class order that sorting the names would change (as mmengine's config writer does)
PARENTS = {'Ship': None, 'Warship': 'Ship', 'Merchant': 'Ship', 'Destroyer': 'Warship',
           'Cargo': 'Merchant', 'Aircraft Carrier': 'Warship'}
ORDER = list(PARENTS)
MISSING_PACKAGE = 'projects.BHCL.models'


def test_encode_decode_round_trip():
    names = ['Ship', 'Aircraft Carrier', 'a/b', 'Überwasser', '"quoted"']
    value = encode_class_order(names)
    assert value.dtype == torch.uint8 and value.dim() == 1
    assert decode_class_order(value) == names


def test_to_config_is_ordered_paths_and_survives_mmengine_writing(tmp_path):
    tree = LabelTree.from_parents(PARENTS)
    cfg = tree.to_config()
    assert cfg['paths'][:3] == ['Ship', 'Ship/Warship', 'Ship/Merchant'] and 'parents' not in cfg
    path = tmp_path / 'tree.py'
    Config(dict(label_tree=cfg)).dump(str(path))
    assert LabelTree.from_config(Config.fromfile(str(path)).label_tree) == tree
    slashed = LabelTree.from_paths([['A/B'], ['A/B', 'C']])
    assert LabelTree.from_config(slashed.to_config()) == slashed


def test_mmengine_writing_reorders_a_parents_dict(tmp_path):
    """The hazard the module exists for: if this stops holding, the guards are still right."""
    path = tmp_path / 'raw.py'
    Config(dict(label_tree=dict(parents=PARENTS))).dump(str(path))
    order = list(Config.fromfile(str(path)).label_tree.parents)
    assert order == sorted(ORDER)
    with pytest.raises(ClassOrderError) as info:
        check_label_trees_survive(Config(dict(model=dict(label_tree=dict(parents=PARENTS)))))
    message = str(info.value)
    assert 'model.label_tree' in message and 'paths=' in message
    assert str(ORDER) in message and str(sorted(ORDER)) in message
    # a dict already in sorted order survives
    check_label_trees_survive(Config(dict(label_tree=dict(
        parents={k: PARENTS[k] for k in sorted(PARENTS)}))))


def test_dump_config_and_preserve_keep_the_order(tmp_path):
    shared = dict(parents=dict(PARENTS), ignore=['Dock'])
    cfg = Config(dict(model=dict(type='X', label_tree=shared),
                      train_dataloader=dict(dataset=dict(label_tree=dict(shared))),
                      evaluators=[dict(label_tree=dict(shared))]))
    path = tmp_path / 'out.py'
    dump_config(cfg, str(path))
    back = Config.fromfile(str(path))
    for tree_cfg in (back.model.label_tree, back.train_dataloader.dataset.label_tree,
                     back.evaluators[0].label_tree):
        tree = LabelTree.from_config(tree_cfg)
        assert list(tree.classes) == ORDER and tree.ignore == ('Dock',)
    assert 'parents' in cfg.model.label_tree  # dump_config leaves its input alone
    preserve_label_trees(cfg)  # in place, as tools/train.py and tools/test.py do
    assert 'parents' not in cfg.model.label_tree
    assert list(LabelTree.from_config(cfg.model.label_tree).classes) == ORDER


def test_read_config_text_does_not_import_custom_modules():
    assert importlib.util.find_spec('projects') is None
    text = (f"custom_imports = dict(imports=['{MISSING_PACKAGE}'], allow_failed_imports=False)\n"
            "model = dict(type='OrientedDDQRCNN', num=3)\n")
    with pytest.raises(ImportError):  # what mmengine's fromstring does with it
        Config.fromstring(text, '.py')
    cfg = read_config_text(text, 'ckpt.pth')
    assert cfg.model == dict(type='OrientedDDQRCNN', num=3)
    ckpt = dict(meta=dict(cfg=text), state_dict={})
    assert checkpoint_config(ckpt, 'ckpt.pth').model.num == 3


def test_unreadable_or_missing_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigReadError, match=r"ckpt.pth meta\['cfg'\]: cannot read") as info:
        checkpoint_config(dict(meta=dict(cfg='model = dict(\n')), 'ckpt.pth')
    assert 'stored_config' not in str(info.value)  # no temporary path
    with pytest.raises(ConfigReadError, match='--config'):
        checkpoint_config(dict(state_dict={}), 'ckpt.pth')
    with pytest.raises(ConfigReadError, match='no such config file'):
        checkpoint_config({}, 'ckpt.pth', str(tmp_path / 'nope.py'))
    given = tmp_path / 'given.py'
    given.write_text(f"custom_imports = dict(imports=['{MISSING_PACKAGE}'])\nmodel = dict(a=1)\n")
    assert checkpoint_config(dict(meta=dict(cfg='model = dict(a=2)')), 'c.pth',
                             str(given)).model.a == 1
    assert checkpoint_config(dict(meta=dict(cfg=dict(model=dict(a=3)))), 'c.pth').model.a == 3


class Tiny(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.fc = nn.Linear(2, len(classes))
        guard_class_order(self, classes)


def test_guard_records_and_refuses_another_order(tmp_path):
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import load_state_dict as mm_load_state_dict
    a, b = Tiny(['x', 'y', 'z']), Tiny(['y', 'x', 'z'])
    state = a.state_dict()
    assert recorded_class_order(state) == ['x', 'y', 'z']
    with pytest.raises(ClassOrderError) as info:
        b.load_state_dict(state)
    message = str(info.value)
    assert "index 0: checkpoint 'x', Tiny model 'y'" in message
    assert "['x', 'y', 'z']" in message and "['y', 'x', 'z']" in message
    with pytest.raises(ClassOrderError):
        mm_load_state_dict(b, state, strict=False)
    path = tmp_path / 'a.pth'
    torch.save(dict(state_dict=state, meta={}), path)
    with pytest.raises(ClassOrderError):
        load_checkpoint(b, str(path), map_location='cpu', strict=False)
    # the same order loads, strictly, and the caller's dict keeps its record
    c = Tiny(['x', 'y', 'z'])
    load_checkpoint(c, str(path), map_location='cpu', strict=True)
    c.load_state_dict(state, strict=True)
    assert CLASS_ORDER_KEY in state
    torch.testing.assert_close(c.fc.weight, a.fc.weight)
    # a state dict that records no order (older, foreign) loads as before
    plain = {k: v for k, v in state.items() if k != CLASS_ORDER_KEY}
    b.load_state_dict(plain, strict=True)


def test_check_class_order_names_a_length_difference():
    check_class_order(['a', 'b'], ('a', 'b'))
    with pytest.raises(ClassOrderError, match=r"index 2: checkpoint 'c', model '\(none\)'"):
        check_class_order(['a', 'b'], ['a', 'b', 'c'])


def test_converted_checkpoint_records_the_order():
    tree = LabelTree.from_parents(PARENTS)
    out = converted_checkpoint({'w': torch.zeros(1)}, tree, converted_from='x.pth')
    assert recorded_class_order(out['state_dict']) == ORDER
    assert out['meta']['class_order'] == ORDER
    assert out['meta']['dataset_meta']['classes'] == ORDER
    assert LabelTree.from_config(out['meta']['dataset_meta']['label_tree']) == tree
    assert out['meta']['converted_from'] == 'x.pth'
