"""Check ``--cfg-options`` keys against the config before anything is built.

mmengine's ``Config.merge_from_dict`` adds any key it is given, so a typo
(``trian_cfg.max_epochs=1``) silently becomes a new key and the run goes on
with the value it meant to change untouched. ``apply_cfg_options`` merges the
options only when every key names something the config has, or something the
module that reads that part of the config accepts:

* a key of a dict with a ``type`` may be any keyword argument of that class
  (its ``__init__`` and those of its bases), e.g. ``model.backbone.with_cp``
  when the config leaves it at its default;
* a top-level key may be any argument of the Runner (``randomness``,
  ``auto_scale_lr``...) or a key it reads from its cfg (``sync_bn``); the data
  loaders, loops, ``env_cfg`` and ``randomness`` take the keys their consumers
  accept;
* a dict that a module reads with ``.get`` (e.g. a detector's ``test_cfg``)
  takes the keys the module declares in its ``CONFIG_DICT_KEYS`` attribute;
* list elements are addressed by index (``pipeline.2.scale``).

Any other missing key is an error naming it and the closest existing keys; a
key bhcl retired (``RETIRED_KEYS``) is an error saying what to write instead.
So is a top-level variable of the config file (``data_root``, ``max_epochs``)
that was copied into keys of the same name when the file was read: setting it
would change nothing, the error names the keys to set instead. A key written ``+key=value`` is merged without the check: the documented way
to add a key on purpose (as in Hydra).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple

NEW_KEY_PREFIX = '+'

# top-level keys mmengine's Runner reads from its cfg (not arguments of
# Runner.__init__), and those the tools read
_RUNNER_CFG_KEYS = ('sync_bn', 'find_unused_parameters', 'activation_checkpointing',
                    'efficient_conv_bn_eval', 'compile', 'runner_type', 'custom_imports')
# keys read by mmengine's Runner from untyped top-level dicts
_ENV_CFG_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit')
_AUTO_SCALE_LR_KEYS = ('enable', 'base_batch_size')
# keys bhcl no longer reads -> what to write instead
RETIRED_KEYS = {
    'model.decoder.decoupled': (
        "decoupling is the decoder layer type: set model.decoder.layer_cfg.type="
        "DecoupledRotatedDecoderLayer (RHINO) or DecoupledQueryDecoderLayer (OrientedFormer)"),
    'model.bbox_head.decoupled': (
        "decoupling is the decoder layer type, from which RHINO's head learns how to split "
        "its queries: remove bbox_head.decoupled and set model.decoder.layer_cfg.type="
        "DecoupledRotatedDecoderLayer for decoupled queries"),
}


class ConfigKeyError(ValueError):
    """A ``--cfg-options`` key that names nothing in the config."""


def split_new_keys(options: Mapping[str, object]) -> Tuple[Dict[str, object], Dict[str, object]]:
    """``(checked, new)``: the options to check, and those written ``+key``
    (prefix removed) that are merged as given."""
    checked, new = {}, {}
    for key, value in options.items():
        if key.startswith(NEW_KEY_PREFIX):
            new[key[len(NEW_KEY_PREFIX):]] = value
        else:
            checked[key] = value
    return checked, new


def apply_cfg_options(cfg, options: Optional[Mapping[str, object]]):
    """Check ``options`` (``--cfg-options``) against ``cfg``, then merge them.

    Raises ``ConfigKeyError`` listing every unknown key with suggestions;
    nothing is merged then. Returns ``cfg``.
    """
    if not options:
        return cfg
    checked, new = split_new_keys(options)
    problems = [p for p in (key_problem(cfg, k) for k in checked) if p is not None]
    if problems:
        raise ConfigKeyError('\n'.join(problems))
    cfg.merge_from_dict({**checked, **new})
    return cfg


def key_problem(cfg, key: str) -> Optional[str]:
    """``None`` if ``--cfg-options key=...`` sets something ``cfg`` has or its
    reader accepts; otherwise a one-line error naming the key and suggestions."""
    if key in RETIRED_KEYS:
        return f'--cfg-options {key}: no longer an option; {RETIRED_KEYS[key]}'
    root = cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg
    return _check(root, key, suggest=True)


def _check(root: Mapping, key: str, suggest: bool) -> Optional[str]:
    """``key_problem`` on the config dict; without ``suggest`` (checking a
    suggestion) the message is short and config variables are not examined."""
    parts = key.split('.')
    if not all(parts):
        return f'--cfg-options {key}: empty component in the key'
    scope = root.get('default_scope')
    node, owner = root, _Owner.runner(root)
    if suggest and parts[0] in root:
        problem = _config_variable_problem(root, key, owner)
        if problem is not None:
            return problem
    for i, part in enumerate(parts):
        here = '.'.join(parts[:i]) or 'the config'
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                return (f'--cfg-options {key}: {here} is a list of {len(node)} items; '
                        f'index it with 0..{len(node) - 1}, not {part!r}')
            node, owner = node[int(part)], _Owner.of(node[int(part)], None, scope)
            continue
        if not isinstance(node, Mapping):
            return (f'--cfg-options {key}: {here} is {node!r} in this config, not a dict, so it '
                    f'has no key {part!r}; set {here} itself')
        if part in node:
            node, owner = node[part], _Owner.of(node[part], (owner, part), scope)
            continue
        accepted = owner.accepted_keys()
        if accepted is None or part in accepted:
            return None   # a keyword argument left at its default: legitimately new
        if not suggest:
            return f'--cfg-options {key}: unknown key'
        return _unknown_key_message(key, parts, i, node, accepted, root)
    return None


def _config_variable_problem(root: Mapping, key: str, runner: '_Owner') -> Optional[str]:
    """A top-level variable of the config file (``data_root``, ``max_epochs``)
    whose value was copied into keys of the same name when the file was read:
    setting the variable changes none of them."""
    name, _, rest = key.partition('.')
    if name in runner.accepted_keys() or name.startswith('_'):
        return None
    copies = [p for p in _paths(root) if '.' in p and p.rsplit('.', 1)[1] == name]
    if not copies:
        return None
    shown = [f'{p}.{rest}' if rest else p for p in copies[:4]]
    return (f'--cfg-options {key}: {name} is a variable of the config file, already copied into '
            f'{", ".join(shown)}{" ..." if len(copies) > 4 else ""} when the file was read, so '
            f'setting it changes nothing; set {"those keys" if len(copies) > 1 else shown[0]} '
            f'instead (or write {NEW_KEY_PREFIX}{key}=... to set the variable anyway)')


def _unknown_key_message(key: str, parts: Sequence[str], i: int, node: Mapping,
                         accepted: FrozenSet[str], root: Mapping) -> str:
    here = '.'.join(parts[:i])
    part = parts[i]
    rest = '.'.join(parts[i + 1:])
    siblings = sorted({str(k) for k in node} | set(accepted))
    near = difflib.get_close_matches(part, siblings, n=len(siblings), cutoff=0.6)
    # keep the guesses under which the rest of the key exists too
    guesses = [g for g in ('.'.join(p for p in (here, name, rest) if p) for name in near)
               if _check(root, g, suggest=False) is None][:3]
    if not guesses:   # the same name elsewhere, e.g. max_epochs -> train_cfg.max_epochs
        full = '.'.join(parts)
        elsewhere = [p for p in _paths(root) if p not in guesses and
                     difflib.SequenceMatcher(None, p.split('.')[-1], parts[-1]).ratio() >= 0.8]
        elsewhere.sort(key=lambda p: -difflib.SequenceMatcher(None, p, full).ratio())
        guesses += elsewhere[:3 - len(guesses)]
    where = f'{here} has' if here else 'the config has'
    hint = (f'did you mean {" or ".join(guesses)}?' if guesses
            else f'its keys are: {", ".join(siblings[:20])}{" ..." if len(siblings) > 20 else ""}.')
    return (f'--cfg-options {key}: {where} no key {part!r}; {hint} '
            f'(to add a new key on purpose, write {NEW_KEY_PREFIX}{key}=...)')


def _paths(node, prefix: str = '') -> Iterator[str]:
    """Every dotted key path of a config (dicts and list indices); keys that
    contain a dot (``paramwise_cfg.custom_keys``) cannot be addressed, skipped."""
    items = (node.items() if isinstance(node, Mapping)
             else enumerate(node) if isinstance(node, (list, tuple)) else ())
    for k, v in items:
        if '.' in str(k):
            continue
        path = f'{prefix}.{k}' if prefix else str(k)
        yield path
        yield from _paths(v, path)


class _Owner:
    """What reads a config node, hence which missing keys it may take.

    ``cls``: the class a typed dict builds; ``parent``: ``(owner of the dict
    holding this node, key of this node in it)``; ``keys``: a fixed key set.
    """

    def __init__(self, cls=None, parent=None, keys: Optional[Sequence[str]] = None,
                 unknown: bool = False) -> None:
        self.cls, self.parent, self.unknown = cls, parent, unknown
        self.keys = None if keys is None else frozenset(keys)

    @classmethod
    def runner(cls, root: Mapping) -> '_Owner':
        runner_cls = None
        if root.get('runner_type'):
            runner_cls = _resolve_type(root['runner_type'], root.get('default_scope'))
        if runner_cls is None:
            from mmengine.runner import Runner
            runner_cls = Runner
        return cls(cls=runner_cls)

    @classmethod
    def of(cls, node, parent, scope) -> '_Owner':
        if isinstance(node, Mapping) and 'type' in node:
            target = _resolve_type(node['type'], node.get('_scope_', scope))
            return cls(cls=target, unknown=target is None)
        return cls(parent=parent)

    def accepted_keys(self) -> Optional[FrozenSet[str]]:
        """Keys the reader accepts; ``None`` when that cannot be known (a type
        that is not registered), in which case nothing is rejected."""
        if self.unknown:
            return None
        if self.cls is not None:
            keys = _init_keys(self.cls)
            if self.parent is None and _is_runner(self.cls):
                keys |= frozenset(_RUNNER_CFG_KEYS)
            return keys
        if self.keys is not None:
            return self.keys
        if self.parent is None:
            return frozenset()
        owner, name = self.parent
        if owner.cls is None:
            return frozenset()
        if _is_runner(owner.cls):
            return _runner_dict_keys(name)
        declared = getattr(owner.cls, 'CONFIG_DICT_KEYS', {}).get(name)
        return frozenset(declared or ())


def _is_runner(target) -> bool:
    from mmengine.runner import Runner
    return isinstance(target, type) and issubclass(target, Runner)


def _runner_dict_keys(name: str) -> FrozenSet[str]:
    """Keys of the untyped top-level dicts that mmengine's Runner reads."""
    if name.endswith('_dataloader'):
        from torch.utils.data import DataLoader
        return _init_keys(DataLoader)
    if name == 'train_cfg':
        from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
        return _init_keys(EpochBasedTrainLoop) | _init_keys(IterBasedTrainLoop) | {'by_epoch'}
    if name in ('val_cfg', 'test_cfg'):
        from mmengine.runner import TestLoop, ValLoop
        return _init_keys(ValLoop if name == 'val_cfg' else TestLoop)
    if name == 'randomness':
        from mmengine.runner import set_random_seed
        return _init_keys(set_random_seed)
    if name == 'env_cfg':
        return frozenset(_ENV_CFG_KEYS)
    if name == 'auto_scale_lr':
        return frozenset(_AUTO_SCALE_LR_KEYS)
    return frozenset()


def _init_keys(target) -> FrozenSet[str]:
    """Named keyword arguments of a class (its ``__init__`` and its bases') or
    a function, plus the keys mmengine's builders read themselves."""
    keys = {'type', '_scope_'}
    functions = ([c.__init__ for c in inspect.getmro(target) if '__init__' in vars(c)]
                 if isinstance(target, type) else [target])
    for fn in functions:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):   # builtins without a signature
            continue
        keys.update(p.name for p in params
                    if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != 'self')
    keys.update(_builder_keys(target))
    return frozenset(keys)


def _builder_keys(target) -> List[str]:
    """Keys popped by the code that builds ``target`` before calling it."""
    if not isinstance(target, type):
        return []
    forwarded = getattr(target, 'BAG_GD_LOSS', None)   # mmrotate's GDLoss: **kwargs -> these
    if forwarded:
        return sorted({p for fn in forwarded.values() for p in inspect.signature(fn).parameters})
    from mmengine.hooks import Hook
    from mmengine.optim import OptimWrapper
    from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
    from torch.nn import GroupNorm, LayerNorm
    from torch.nn.modules.batchnorm import _NormBase
    if issubclass(target, Hook):
        return ['priority']                       # Runner.register_hook
    if issubclass(target, OptimWrapper):
        return ['constructor', 'paramwise_cfg']   # build_optim_wrapper
    if issubclass(target, _ParamScheduler):
        return ['convert_to_iter_based']          # build_scheduler_from_cfg
    if issubclass(target, (_NormBase, GroupNorm, LayerNorm)):
        return ['requires_grad']                  # mmcv's build_norm_layer
    return []


def _resolve_type(type_, scope: Optional[str]):
    """The class or function a config ``type`` names, looked up in every
    mmengine root registry under ``scope``; ``None`` if none has it."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    import mmengine.registry as registries
    from mmengine.registry import Registry
    for root in vars(registries).values():
        if not isinstance(root, Registry):
            continue
        registry = (root._search_child(scope) if scope else None) or root
        try:
            found = registry.get(type_)
        except Exception:   # a scope whose package is not installed
            found = None
        if found is not None:
            return found
    return None


def amp_device_problem(cfg) -> Optional[str]:
    """A one-line message if ``cfg`` trains with mmengine's ``AmpOptimWrapper``
    (``--amp``) on a machine without a device it supports, else ``None``.

    mmengine asserts this only once the whole runner is built; checking the
    config first lets a tool stop before building anything.
    """
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    from mmengine.optim import AmpOptimWrapper
    wrapper = cfg.get('optim_wrapper') or {}
    target = _resolve_type(wrapper.get('type', 'OptimWrapper'), cfg.get('default_scope'))
    if not (isinstance(target, type) and issubclass(target, AmpOptimWrapper)):
        return None
    if is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available():
        return None
    return ('AMP (--amp, or optim_wrapper.type=AmpOptimWrapper) needs a CUDA GPU (or an NPU, '
            'MLU or MUSA device) and none is available; drop --amp to train in float32 on the CPU')
