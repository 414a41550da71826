"""Write ``cqdino_reference.pt``: numbers from CQ-DINO's own code (RedAIGC/CQ-DINO).

CQ-DINO's repository has no licence, so none of its code is in bhcl: this script
loads the authors' files from a checkout given on the command line (or in
``CQDINO_ROOT``), runs them on fixed seeded inputs and saves inputs and outputs
as plain tensors. ``tests/test_models/test_cqdino_reference.py`` checks bhcl
against the saved numbers.

    git clone https://github.com/RedAIGC/CQ-DINO CQ-DINO   # commit 6c8e60f
    python tests/data/reference/make_cqdino_reference.py CQ-DINO

What runs, unchanged, from the authors' code (their fork of mmdet 3.x):

1. ``AsymmetricLoss`` (``mmdet/models/detectors/cqdino.py``) with its class
   defaults (gamma_neg 4, gamma_pos 1, clip 0.05), with the values the tree
   detector ``CQDINO`` builds it with (gamma_neg 7, gamma_pos 0, clip 0.05) and
   with the COCO detector's (all 0): loss and gradient w.r.t. the logits.
2. ``CQDINO.create_parent_mask`` on a tree read by their ``csv_to_json``
   (``mmdet/models/language_models/learnable_category_query_tree.py``) from a
   CSV written here in the column layout of their V3Det tree file (that file,
   ``tree_structure_category_id.csv``, is over the snapshot's size limit).
3. ``CQDINO.loss`` as a whole, on a stand-in ``self``: their top-K category
   selection (``LearnableCategoryQueryTree.generate``, K = 100), the gathering
   of the selected category features, the per-object positive maps over the
   selection, the parent mask and the presence ("language") loss. The backbone,
   the category-query model's forward, the transformer and the box head are
   stand-ins: the category features are given, the text projection is the
   identity, and the transformer records what it is given.
4. ``TreeFeatureProcessor.calculate_features`` (bottom-up tree update of the
   category features, same file as 2) on that tree.
5. One encoder fusion layer: ``SingleScaleBiAttentionBlock``
   (``mmdet/models/utils/vlfuse_helper.py`` of their snapshot; their
   ``CQDinoTransformerEncoder`` runs one before each deformable layer) at a tiny
   width (16 channels, attention width 32, 4 heads; the authors use 256, 1024,
   4), its weights drawn at random (the layer-scale ``gamma`` too, so that the
   attention is not scaled down to 1e-4), in eval mode, with padded image tokens;
   once without and once with a category padding mask.
6. The decoder's cross-attention to the selected categories: the forward of
   ``GroundingDinoTransformerDecoderLayer`` (their
   ``mmdet/models/layers/transformer/grounding_dino_layers.py``, the decoder
   ``CQDINO`` builds) at 16 channels, 2 heads, with its self-attention,
   deformable image cross-attention and FFN (and their norms) replaced by the
   identity, so that its output is ``norms[1](cross_attn_text(...))``; random
   weights, padded categories in one image.

How the authors' files are loaded: each is executed as a module of the
installed mmdet 3.x (``mmdet.models.detectors.cqdino`` and so on), so its
relative imports resolve to the installed mmdet (their fork matches it in the
files used: ``vlfuse_helper.py`` is byte-identical; this script loads the
snapshot's copy anyway). Their category-query model imports ``pandas``, a
``tagbertmodel`` (BERT) module and a ``utils`` module that are absent here (the
last two are missing from their repository too): they are replaced by stubs
that raise if used; nothing the reference calls uses them. Everything runs on
CPU in float64 (the fusion layer in float64 from float32 draws).
"""
import argparse
import csv
import importlib.util
import os
import os.path as osp
import sys
import tempfile
import types
from typing import List, Optional

import numpy as np
import torch
from torch import nn

# the stand-ins for modules the authors import but the run never uses (raise if used)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from make_mutdet_reference import _StubModule  # noqa: E402

OUT = osp.join(osp.dirname(osp.abspath(__file__)), 'cqdino_reference.pt')
TOPK = 100            # hard-coded in LearnableCategoryQueryTree.generate
FUSION_DIM, FUSION_EMBED, FUSION_HEADS = 16, 32, 4
CAT_DIM = 8           # width of the stand-in category features


# ------------------------------------------------------------------ loading
def _load(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_authors(root: str) -> dict:
    import mmdet.models  # noqa: F401  (the installed host package)
    sys.modules['pandas'] = _StubModule('pandas')
    lm = 'mmdet.models.language_models'
    sys.modules[f'{lm}.tagbertmodel'] = _StubModule(f'{lm}.tagbertmodel')
    utils = _StubModule(f'{lm}.utils')
    utils.math = __import__('math')  # csv_to_json uses math via ``from .utils import *``
    utils.__all__ = ['math', 'init_tokenizer']
    sys.modules[f'{lm}.utils'] = utils
    vlfuse = _load('mmdet.models.utils.vlfuse_helper',
                   osp.join(root, 'mmdet/models/utils/vlfuse_helper.py'))
    gdino = _load('mmdet.models.layers.transformer.grounding_dino_layers',
                  osp.join(root, 'mmdet/models/layers/transformer/grounding_dino_layers.py'))
    _load('mmdet.models.layers.transformer.cqdino_layers',
          osp.join(root, 'mmdet/models/layers/transformer/cqdino_layers.py'))
    det = _load('mmdet.models.detectors.cqdino', osp.join(root, 'mmdet/models/detectors/cqdino.py'))
    tree = _load(f'{lm}.learnable_category_query_tree',
                 osp.join(root, 'mmdet/models/language_models/learnable_category_query_tree.py'))
    return dict(det=det, tree=tree, vlfuse=vlfuse, gdino=gdino)


# ------------------------------------------------------------------ the tree
def make_tree() -> List[int]:
    """Parent of each node (-1 for roots): 3 roots, 15 level-1, 105 level-2,
    7 level-3 nodes (130 in all, more than the authors' K = 100)."""
    parents = [-1, -1, -1]
    parents += [r for r in range(3) for _ in range(5)]            # nodes 3..17
    parents += [p for p in range(3, 18) for _ in range(7)]        # nodes 18..122
    parents += [18, 18, 19, 20, 20, 20, 40]                       # nodes 123..129
    return parents


def write_tree_csv(parents: List[int], path: str) -> None:
    """The tree in the column layout of the authors' ``tree_structure_category_id.csv``."""
    def ancestors(k):
        out = []
        while parents[k] >= 0:
            k = parents[k]
            out.append(k)
        return out[::-1]

    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['level', 'id', 'category_id', 'english_name', 'chinese_name',
                    'english_description', 'chinese_description', 'parent_id',
                    'direct_children', 'ancestor_category_ids'])
        for k, p in enumerate(parents):
            children = [c for c, q in enumerate(parents) if q == k]
            w.writerow([len(ancestors(k)), k, k, f'c{k}', '', '', '', '' if p < 0 else p,
                        ','.join(map(str, children)), ','.join(map(str, ancestors(k)))])


# ------------------------------------------------------------------ cases
def asymmetric_cases(det) -> list:
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(3, 40, generator=g, dtype=torch.float64)
    x[0, :6] = torch.tensor([-120., -88.5, -30., 30., 88.5, 120.], dtype=torch.float64)
    x[1, :3] = torch.tensor([0., 2.9444, -2.9444], dtype=torch.float64)  # p near 0.95/0.05
    y = (torch.rand(3, 40, generator=g) < 0.3).double()
    y[0, :6] = torch.tensor([1., 0., 1., 0., 1., 0.])
    cases = []
    for kwargs in (dict(), dict(gamma_neg=7, gamma_pos=0, clip=0.05),
                   dict(gamma_neg=0, gamma_pos=0, clip=0)):
        xi = x.clone().requires_grad_(True)
        loss = det.AsymmetricLoss(**kwargs)(xi, y)
        loss.backward()
        cases.append(dict(kwargs=kwargs, x=x, y=y, loss=loss.detach(), grad=xi.grad.clone()))
    return cases


class _MaskSelf:
    def __init__(self, all_node_info):
        self.all_node_info = all_node_info


def image_tags(num_nodes: int) -> torch.Tensor:
    """(4, K) annotated nodes: leaves, a node annotated with one of its
    ancestors, a level-3 node, an image with nothing."""
    tags = torch.zeros(4, num_nodes, dtype=torch.float64)
    tags[0, [20, 57, 100]] = 1          # level-2 leaves under 3, 8, 14
    tags[1, [123, 18, 3, 90]] = 1       # 123 under 18 under 3 (both annotated), 90 a leaf
    tags[2, [129, 126, 5]] = 1          # level-3 nodes; 5 is a level-1 node alone
    return tags


class _Recorder:
    def __init__(self):
        self.text_dict = None

    def __call__(self, feats, text_dict, batch_data_samples):
        self.text_dict = text_dict
        return {}


def loss_case(mods, parents: List[int], all_node_info: dict) -> dict:
    """CQDINO.loss on a stand-in: top-K selection, positive maps, parent mask, presence loss."""
    det, tree = mods['det'], mods['tree']
    g = torch.Generator().manual_seed(1)
    k_nodes = len(parents)
    feats = torch.randn(2, k_nodes, CAT_DIM, generator=g, dtype=torch.float64)
    fc = nn.Linear(CAT_DIM, 1).double()
    with torch.no_grad():
        fc.weight.copy_(torch.randn(1, CAT_DIM, generator=g, dtype=torch.float64))
        fc.bias.fill_(-1.0)
        presence = fc(feats).squeeze(-1)
    order = presence.argsort(dim=1, descending=True)
    # image 0: two selected classes and the lowest-scored one (outside the top K);
    # image 1: an annotated node together with its parent, and one outside the top K
    low0, low1 = order[0, -1].item(), order[1, -3].item()
    names = [[order[0, 3].item(), low0, order[0, 40].item()],
             [order[1, 0].item(), low1, parents[order[1, 0].item()]]]
    names[1] = [n for n in names[1] if n >= 0]
    gt_labels = [torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 1, len(names[1]) - 1])]

    lm = types.SimpleNamespace()
    lm.fc = fc
    lm.tag_list = np.array([f'c{k}' for k in range(k_nodes)])
    lm.clean_category_list = [tree.clean_name(n) for n in lm.tag_list]
    lm.generate = types.MethodType(tree.LearnableCategoryQueryTree.generate, lm)
    _, tag_indexes, _ = lm.generate(feats, (feats, ))

    class _CategoryModel(types.SimpleNamespace):
        def __call__(self, visual):  # the category features are given
            return (feats, )

    model_self = types.SimpleNamespace(
        use_autocast=False, all_node_info=all_node_info, text_feat_map=nn.Identity(),
        language_loss_func=det.AsymmetricLoss(gamma_neg=7, gamma_pos=0, clip=0.05),
        bbox_head=types.SimpleNamespace(loss=lambda **kwargs: {}),
        language_model=_CategoryModel(generate=lm.generate,
                                      clean_category_list=lm.clean_category_list))
    model_self.extract_feat = lambda inputs: ((inputs, ), [inputs])
    recorder = _Recorder()
    model_self.forward_transformer = recorder
    model_self.create_parent_mask = types.MethodType(det.CQDINO.create_parent_mask, model_self)
    samples = []
    for img, (n, labels) in enumerate(zip(names, gt_labels)):
        text = ''.join(f'c{k}. ' for k in n)
        samples.append(types.SimpleNamespace(
            text=text, img_path=f'img{img}.png',
            gt_instances=types.SimpleNamespace(labels=labels)))
    losses = det.CQDINO.loss(model_self, torch.zeros(2, 3, 8, 8, dtype=torch.float64), samples)
    image_categories = torch.zeros(2, k_nodes, dtype=torch.float64)
    for b, n in enumerate(names):
        image_categories[b, n] = 1
    return dict(
        feats=feats, fc_weight=fc.weight.detach().clone(), fc_bias=fc.bias.detach().clone(),
        presence=presence, image_nodes=[torch.tensor(n) for n in names],
        gt_labels=gt_labels,
        gt_nodes=[torch.tensor(n)[lab] for n, lab in zip(names, gt_labels)],
        selected=torch.tensor(tag_indexes),
        selected_feats=recorder.text_dict['embedded'].detach().clone(),
        text_token_mask=recorder.text_dict['text_token_mask'].clone(),
        positive_maps=[s.gt_instances.positive_maps.clone() for s in samples],
        parent_mask=model_self.create_parent_mask(image_categories),
        language_loss=losses['language_loss'].detach().clone())


def tree_feature_case(tree, tree_info, levels, all_levels, k_nodes: int) -> dict:
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, k_nodes, CAT_DIM, generator=g, dtype=torch.float64)
    proc = tree.TreeFeatureProcessor(tree_info, levels, all_levels, 'cpu')
    for info in proc.level_info.values():
        info['update_weights'] = info['update_weights'].double()
    return dict(feats=feats, out=proc.calculate_features(feats.clone()))


def fusion_case(vlfuse, mask_categories: bool) -> dict:
    g = torch.Generator().manual_seed(3)
    block = vlfuse.SingleScaleBiAttentionBlock(
        v_dim=FUSION_DIM, l_dim=FUSION_DIM, embed_dim=FUSION_EMBED, num_heads=FUSION_HEADS,
        init_values=1e-4).eval()
    state = {k: (0.5 * torch.randn(v.shape, generator=g)) for k, v in block.state_dict().items()}
    for name in ('layer_norm_v.weight', 'layer_norm_l.weight'):
        state[name] = 1 + state[name]
    block.load_state_dict(state)
    block.double()
    visual = torch.randn(2, 20, FUSION_DIM, generator=g).double()
    lang = torch.randn(2, 7, FUSION_DIM, generator=g).double()
    image_pad = torch.zeros(2, 20, dtype=torch.bool)
    image_pad[1, 14:] = True
    cat_valid = torch.ones(2, 7, dtype=torch.bool)
    cat_valid[0, 5:] = False
    with torch.no_grad():
        new_v, new_l = block(visual_feature=visual, lang_feature=lang,
                             attention_mask_v=image_pad,
                             attention_mask_l=~cat_valid if mask_categories else None)
    return dict(state={k: v.double() for k, v in state.items()}, visual=visual, lang=lang,
                image_pad=image_pad, category_valid=cat_valid,
                masked_categories=mask_categories, visual_out=new_v, category_out=new_l,
                cfg=dict(v_dim=FUSION_DIM, l_dim=FUSION_DIM, embed_dim=FUSION_EMBED,
                         num_heads=FUSION_HEADS))


class _Identity(nn.Module):
    def forward(self, query, *args, **kwargs):
        return query


def decoder_case(gdino) -> dict:
    g = torch.Generator().manual_seed(4)
    dims, heads = 16, 2
    layer = gdino.GroundingDinoTransformerDecoderLayer(
        self_attn_cfg=dict(embed_dims=dims, num_heads=heads, dropout=0.0),
        cross_attn_text_cfg=dict(embed_dims=dims, num_heads=heads, dropout=0.0),
        cross_attn_cfg=dict(embed_dims=dims, num_heads=heads, num_levels=1, dropout=0.0),
        ffn_cfg=dict(embed_dims=dims, feedforward_channels=32, ffn_drop=0.0)).eval()
    layer.self_attn = layer.cross_attn = layer.ffn = _Identity()
    for i in (0, 2, 3):
        layer.norms[i] = _Identity()
    state = {k: 0.5 * torch.randn(v.shape, generator=g) for k, v in layer.state_dict().items()}
    state['norms.1.weight'] = 1 + state['norms.1.weight']
    layer.load_state_dict(state)
    layer.double()
    query = torch.randn(2, 9, dims, generator=g).double()
    query_pos = torch.randn(2, 9, dims, generator=g).double()
    cats = torch.randn(2, 6, dims, generator=g).double()
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    with torch.no_grad():
        out = layer(query=query, query_pos=query_pos, memory_text=cats,
                    text_attention_mask=~valid)
    return dict(state={k: v.double() for k, v in state.items()}, query=query,
                query_pos=query_pos, categories=cats, category_valid=valid, out=out,
                cfg=dict(embed_dims=dims, num_heads=heads))


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', default=os.environ.get('CQDINO_ROOT'),
                        help='checkout of RedAIGC/CQ-DINO')
    parser.add_argument('--out', default=OUT)
    args = parser.parse_args(argv)
    if not args.root or not osp.isfile(osp.join(args.root, 'mmdet/models/detectors/cqdino.py')):
        parser.error('give the path of a RedAIGC/CQ-DINO checkout (or set CQDINO_ROOT): '
                     'it must contain mmdet/models/detectors/cqdino.py')
    torch.manual_seed(0)
    mods = load_authors(args.root)
    parents = make_tree()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = osp.join(tmp, 'tree.csv')
        write_tree_csv(parents, csv_path)
        tree_info, levels, all_levels, all_node_info = mods['tree'].csv_to_json(csv_path)
    tags = image_tags(len(parents))
    ref = dict(
        parents=torch.tensor(parents), topk=TOPK,
        asymmetric=asymmetric_cases(mods['det']),
        parent_mask=dict(image_tags=tags,
                         mask=mods['det'].CQDINO.create_parent_mask(_MaskSelf(all_node_info),
                                                                    tags)),
        loss=loss_case(mods, parents, all_node_info),
        tree_features=tree_feature_case(mods['tree'], tree_info, levels, all_levels,
                                         len(parents)),
        fusion=[fusion_case(mods['vlfuse'], False), fusion_case(mods['vlfuse'], True)],
        decoder_cross_attention=decoder_case(mods['gdino']))
    torch.save(ref, args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
