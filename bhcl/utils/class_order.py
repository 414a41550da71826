"""Class order that survives configs and checkpoints.

A detector's class dimension is indexed by the label tree's node order, so
weights are only meaningful with the tree they were made for. This module
keeps that order intact where it can be lost:

* configs: :func:`dump_config` writes every ``label_tree`` as an ordered
  ``paths`` list (mmengine sorts dict keys when it writes a config, which
  reorders a ``parents`` dict) and refuses a tree whose order would change
  when the file is read back; :func:`preserve_label_trees` does the same for a
  config the Runner is about to dump (``tools/train.py``, ``tools/test.py``);
* checkpoints: every bhcl detector's ``state_dict`` carries its class order
  under :data:`CLASS_ORDER_KEY` (:func:`guard_class_order`), and loading a
  state dict recorded for another order raises :class:`ClassOrderError`
  showing both orders, whichever loader is used (``model.load_state_dict``,
  mmengine's ``load_checkpoint``, the Runner's ``load_from`` / resume);
* converted checkpoints: :func:`converted_checkpoint` records the order in the
  state dict and in ``meta``;
* stored configs: :func:`checkpoint_config` reads ``meta['cfg']`` (or a
  given file) without importing the config's ``custom_imports``, so a
  published checkpoint converts without the published package.
"""
import json
import os.path as osp
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from bhcl.structures import LabelTree

__all__ = ['CLASS_ORDER_KEY', 'ClassOrderError', 'ConfigReadError', 'guard_class_order',
           'encode_class_order', 'decode_class_order', 'recorded_class_order',
           'check_class_order', 'converted_checkpoint', 'read_config_text', 'checkpoint_config',
           'preserve_label_trees', 'check_label_trees_survive', 'dump_config']

# a uint8 tensor (UTF-8 JSON list of names) so that every tool that moves tensors moves it
CLASS_ORDER_KEY = 'class_order'


class ClassOrderError(ValueError):
    """A checkpoint or config would change which class an output index means."""


class ConfigReadError(ValueError):
    """A config (a file or a checkpoint's ``meta['cfg']``) cannot be read."""


# ------------------------------------------------------------ checkpoints
def encode_class_order(classes: Sequence[str]) -> Tensor:
    """Class names in index order -> (n,) uint8 tensor (UTF-8 JSON)."""
    data = json.dumps([str(c) for c in classes], ensure_ascii=False).encode('utf-8')
    return torch.tensor(list(data), dtype=torch.uint8)


def decode_class_order(value: Tensor) -> List[str]:
    """Inverse of :func:`encode_class_order`."""
    return json.loads(bytes(value.detach().cpu().to(torch.uint8).tolist()).decode('utf-8'))


def recorded_class_order(state_dict: Mapping[str, Any], prefix: str = '') -> Optional[List[str]]:
    """The class order recorded in a state dict, None when it records none."""
    value = state_dict.get(prefix + CLASS_ORDER_KEY)
    return None if value is None else decode_class_order(value)


def check_class_order(expected: Sequence[str], found: Sequence[str], what: str = 'checkpoint',
                      target: str = 'model') -> None:
    """Raise :class:`ClassOrderError` (showing both orders) unless they are equal."""
    expected, found = [str(c) for c in expected], [str(c) for c in found]
    if expected == found:
        return
    first = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b),
                 min(len(found), len(expected)))
    at = (f'index {first}: {what} {found[first] if first < len(found) else "(none)"!r}, '
          f'{target} {expected[first] if first < len(expected) else "(none)"!r}')
    raise ClassOrderError(
        f'the {what} was made for another class order than the {target}\'s label tree '
        f'(first difference at {at}); its class outputs would be read as the wrong classes. '
        f'Use the config (label tree) the {what} was made for.\n'
        f'  {what} ({len(found)} classes): {found}\n'
        f'  {target} ({len(expected)} classes): {expected}')


def guard_class_order(module: nn.Module, classes: Sequence[str]) -> None:
    """Make ``module``'s state dict record ``classes`` and its loading check them.

    ``module.state_dict()`` gains ``CLASS_ORDER_KEY`` (a uint8 tensor, not a
    buffer); a state dict loaded into ``module`` that records another order
    raises :class:`ClassOrderError` (from torch's and mmengine's loaders alike:
    both run the module's load pre-hooks). One that records none (an older or
    a foreign checkpoint) loads as before.
    """
    classes = tuple(str(c) for c in classes)
    encoded = encode_class_order(classes)

    def record(mod, state_dict, prefix, local_metadata):
        state_dict[prefix + CLASS_ORDER_KEY] = encoded.clone()

    def check(mod, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        value = state_dict.pop(prefix + CLASS_ORDER_KEY, None)
        if value is not None:
            check_class_order(classes, decode_class_order(value), what='checkpoint',
                              target=f'{type(mod).__name__} model')

    module.register_state_dict_post_hook(record)
    module.register_load_state_dict_pre_hook(check)


def converted_checkpoint(state_dict: Mapping[str, Tensor], tree: LabelTree,
                         **meta) -> Dict[str, Any]:
    """``dict(state_dict=..., meta=...)`` of a converted model, recording ``tree``'s class
    order in the state dict (checked when loaded) and in ``meta`` (``class_order`` and
    mmdet's ``dataset_meta``, read by ``mmdet.apis.init_detector``)."""
    state = dict(state_dict)
    state[CLASS_ORDER_KEY] = encode_class_order(tree.classes)
    meta = dict(meta, class_order=list(tree.classes),
                dataset_meta=dict(classes=list(tree.classes), label_tree=tree.to_config()))
    return dict(state_dict=state, meta=meta)


# ---------------------------------------------------------------- configs
def read_config_text(text: str, source: str):
    """Config text (what mmengine stores in ``meta['cfg']``) -> ``Config``, without
    importing its ``custom_imports`` (a published checkpoint names packages a bhcl
    user does not have). The text is executed as a Python config file, as mmengine
    does: read only checkpoints you trust.

    Raises:
        ConfigReadError: the text is not a readable config (names ``source``).
    """
    from mmengine.config import Config
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'stored_config.py')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
        try:
            return Config.fromfile(path, import_custom_modules=False)
        except Exception as error:  # SyntaxError, NameError, mmengine's parsing errors
            message = str(error).replace(path, source)
            raise ConfigReadError(f'{source}: cannot read the config: {type(error).__name__}: '
                                  f'{message}') from error


def checkpoint_config(checkpoint: Mapping[str, Any], source: str,
                      config_file: Optional[str] = None):
    """The config of a checkpoint: ``config_file`` when given, else the checkpoint's
    ``meta['cfg']`` (text, dict or ``Config``); ``custom_imports`` are never imported.

    Args:
        checkpoint: the loaded checkpoint dict.
        source: its path, for messages.
        config_file: a config ``.py`` overriding the stored one.
    Raises:
        ConfigReadError: no stored config and no file, or one that cannot be read.
    """
    from mmengine.config import Config
    if config_file is not None:
        if not osp.isfile(config_file):
            raise ConfigReadError(f'{config_file}: no such config file')
        try:
            return Config.fromfile(config_file, import_custom_modules=False)
        except Exception as error:
            raise ConfigReadError(f'{config_file}: cannot read the config: '
                                  f'{type(error).__name__}: {error}') from error
    stored = (checkpoint.get('meta') or {}).get('cfg') if isinstance(checkpoint, Mapping) \
        else None
    if not stored:
        raise ConfigReadError(f"{source}: the checkpoint holds no config (meta['cfg']); pass "
                              'the config it was trained with (--config)')
    if isinstance(stored, str):
        return read_config_text(stored, f"{source} meta['cfg']")
    if isinstance(stored, Mapping):
        return Config(dict(stored))
    raise ConfigReadError(f"{source}: meta['cfg'] is a {type(stored).__name__}, expected the "
                          'config text; pass the config with --config')


def _label_trees(node: Any, where: str = '') -> Iterator[Tuple[str, Any]]:
    """(key path, value) of every ``label_tree`` entry in a config tree."""
    if hasattr(node, 'items'):  # dict, ConfigDict, Config
        for key, value in node.items():
            here = f'{where}.{key}' if where else str(key)
            if key == 'label_tree' and hasattr(value, 'items'):
                yield here, value
            else:
                yield from _label_trees(value, here)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _label_trees(value, f'{where}.{i}')


def _tree_order(where: str, value: Mapping) -> List[str]:
    """Class order a ``label_tree`` entry gives (what ``LabelTree.from_config`` builds)."""
    if 'paths' in value:
        return [p.split('/')[-1] if isinstance(p, str) else list(p)[-1] for p in value['paths']]
    if 'parents' in value:
        return [str(k) for k in value['parents']]
    raise ClassOrderError(f'{where}: a label_tree needs paths= or parents=, got keys '
                          f'{sorted(value)}')


def preserve_label_trees(cfg) -> None:
    """Rewrite, in place, every ``label_tree=dict(parents={...})`` of ``cfg`` (an mmengine
    ``Config`` or dict) as the same tree with ordered ``paths=[...]``, so that writing
    the config (which sorts dict keys) keeps the class order. Then check that it does
    (:func:`check_label_trees_survive`)."""
    for where, value in list(_label_trees(cfg)):
        if 'parents' in value and 'paths' not in value:
            tree = LabelTree.from_config(dict(value))
            rest = {k: v for k, v in value.items() if k != 'parents'}
            value.clear()
            value.update(rest, paths=tree.to_config()['paths'])
    check_label_trees_survive(cfg)


def check_label_trees_survive(cfg, text: Optional[str] = None) -> None:
    """Raise :class:`ClassOrderError` when a ``label_tree`` of ``cfg`` would give another
    class order once ``cfg`` is written (``text``: the written form, default
    ``cfg.pretty_text``) and read back; the message names the entry and both orders."""
    from mmengine.config import Config
    if not isinstance(cfg, Config):
        cfg = Config(dict(cfg))
    before = {w: _tree_order(w, v) for w, v in _label_trees(cfg.to_dict())}
    if not before:
        return
    after_cfg = read_config_text(cfg.pretty_text if text is None else text, 'written config')
    after = {w: _tree_order(w, v) for w, v in _label_trees(after_cfg.to_dict())}
    for where, order in before.items():
        if after.get(where) != order:
            raise ClassOrderError(
                f'{where}: this label tree would change its class order when the config is '
                'written and read back (a parents= dict is written with sorted keys); give '
                f'it as an ordered paths= list.\n  before: {order}\n  after: '
                f'{after.get(where)}')


def dump_config(cfg, path: str) -> None:
    """Write ``cfg`` (a ``Config`` or dict) to ``path`` with every label tree as an ordered
    ``paths`` list, after checking that reading the file back gives every tree's class
    order unchanged (:class:`ClassOrderError` otherwise; nothing is written)."""
    from mmengine.config import Config
    cfg = Config(cfg.to_dict() if isinstance(cfg, Config) else dict(cfg))
    preserve_label_trees(cfg)
    text = cfg.pretty_text
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
