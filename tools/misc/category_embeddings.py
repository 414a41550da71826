"""Write a category-embeddings file (one vector per label-tree node) with a text encoder.

The file is what ``bhcl.models.layers.category_embeddings.load_category_embeddings``
reads (a dict of ``categories`` and ``embeddings``; CQ-DINO's layout) to
initialise the category queries. No text model ships with bhcl: use one you
have installed.

    # a label tree from a config that defines ``label_tree`` (or a tree JSON)
    python tools/misc/category_embeddings.py configs/_base_/datasets/shiprs_label_tree.py \
        shiprs_clip.pt --encoder open_clip:ViT-B-32:openai --template 'a satellite image of a {}.'
    # any function ``encode(texts: List[str]) -> (N, D)`` of an importable module
    python tools/misc/category_embeddings.py TREE OUT --encoder mypackage.text:encode

Built-in encoders: ``open_clip:ARCH:PRETRAINED`` (open_clip_torch) and
``sentence-transformers:MODEL`` (sentence-transformers). Vectors are
L2-normalised unless ``--no-normalize``.
"""
import argparse
import importlib
import os.path as osp
import sys
from typing import Callable, List, Optional

import torch

from bhcl.structures import LabelTree


def load_tree(path: str) -> LabelTree:
    """A tree JSON (``nodes: [{name, path, index}]``) or a config defining ``label_tree``."""
    if path.endswith('.json'):
        return LabelTree.from_json(path)
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    tree = cfg.get('label_tree')
    if tree is None:
        tree = cfg.get('train_dataloader', {}).get('dataset', {}).get(
            'metainfo', {}).get('label_tree')
    if tree is None:
        raise SystemExit(f'{path} defines no label_tree (nor train_dataloader.dataset.'
                         'metainfo.label_tree); give a tree config or a tree JSON')
    return LabelTree.from_config(tree)


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SystemExit(f'this encoder needs the {package} package ({e}); install it '
                         'or pass --encoder module:function') from None


def build_encoder(spec: str, device: str = 'cpu') -> Callable[[List[str]], torch.Tensor]:
    """``open_clip:ARCH:PRETRAINED``, ``sentence-transformers:MODEL`` or ``module:function``."""
    kind, _, rest = spec.partition(':')
    if not rest:
        raise SystemExit(f'--encoder {spec!r}: expected open_clip:ARCH:PRETRAINED, '
                         'sentence-transformers:MODEL or module:function')
    if kind == 'open_clip':
        open_clip = _require('open_clip', 'open_clip_torch')
        arch, _, pretrained = rest.partition(':')
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None,
                                                            device=device)
        tokenizer = open_clip.get_tokenizer(arch)

        def encode(texts):
            with torch.no_grad():
                return model.encode_text(tokenizer(texts).to(device)).float().cpu()
        return encode
    if kind == 'sentence-transformers':
        st = _require('sentence_transformers', 'sentence-transformers')
        model = st.SentenceTransformer(rest, device=device)
        return lambda texts: torch.as_tensor(model.encode(texts, convert_to_numpy=True))
    try:
        module = importlib.import_module(kind)
    except ImportError as e:
        raise SystemExit(f'--encoder {spec!r}: cannot import {kind} ({e})') from None
    if not callable(getattr(module, rest, None)):
        raise SystemExit(f'--encoder {spec!r}: {kind} has no function {rest}')
    return getattr(module, rest)


def node_texts(tree: LabelTree, template: str, text: str) -> List[str]:
    """The text encoded for each node: its name or its root-to-node path, in ``template``."""
    if '{}' not in template:
        raise SystemExit(f'--template {template!r} must contain {{}} for the node name')
    names = tree.classes if text == 'name' else [' '.join(tree.path(k))
                                                  for k in range(tree.num_classes)]
    return [template.format(n) for n in names]


def write_embeddings(tree: LabelTree, encode: Callable, out: str, template: str = '{}',
                     text: str = 'name', normalize: bool = True) -> torch.Tensor:
    texts = node_texts(tree, template, text)
    emb = torch.as_tensor(encode(texts)).float()
    if emb.dim() != 2 or emb.shape[0] != len(texts):
        raise SystemExit(f'the encoder returned shape {tuple(emb.shape)} for {len(texts)} '
                         'texts; it must return one vector per text, (N, D)')
    if normalize:
        emb = torch.nn.functional.normalize(emb, dim=1)
    torch.save(dict(categories=list(tree.classes), embeddings=emb, texts=texts), out)
    return emb


def parse_args(argv: Optional[list] = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('tree', help='tree JSON or config defining label_tree')
    parser.add_argument('out', help='output file (.pt)')
    parser.add_argument('--encoder', required=True, help='see the module doc')
    parser.add_argument('--template', default='{}', help="text around the name, e.g. 'a {}'")
    parser.add_argument('--text', choices=('name', 'path'), default='name',
                        help='encode the node name or its root-to-node path')
    parser.add_argument('--no-normalize', action='store_true')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def main(argv: Optional[list] = None) -> None:
    args = parse_args(argv)
    tree = load_tree(args.tree)
    if osp.dirname(osp.abspath(args.out)) and not osp.isdir(osp.dirname(osp.abspath(args.out))):
        raise SystemExit(f'output folder of {args.out} does not exist')
    emb = write_embeddings(tree, build_encoder(args.encoder, args.device), args.out,
                           args.template, args.text, not args.no_normalize)
    print(f'wrote {args.out}: {emb.shape[0]} nodes x {emb.shape[1]}', file=sys.stderr)


if __name__ == '__main__':
    main()
