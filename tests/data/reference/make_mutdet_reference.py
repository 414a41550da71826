"""Write ``mutdet_reference.pt``: numbers from MutDet's own code (floatingstarZ/MutDet).

MutDet's repository has no licence, so none of its code is in bhcl: this script
imports the authors' modules from a checkout given on the command line (or in
``MUTDET_ROOT``), runs them on fixed seeded inputs and saves inputs and outputs
as plain tensors. ``tests/test_models/test_mutdet_reference.py`` checks bhcl
against the saved numbers.

    git clone https://github.com/floatingstarZ/MutDet MutDet   # commit 097ce90
    python tests/data/reference/make_mutdet_reference.py MutDet

What runs, unchanged, from the authors' code:

1. The alignment loss: ``DETReg_DNARSDeformableDETRHeadv7.loss_single_with_embed``
   (``AlignRotate/models/dense_heads/DetReg_dn_ars_detr_headv7.py``), the
   symmetric InfoNCE of the matched decoder queries' predicted embeddings and
   their objects' enhanced embeddings (``loss_embed``). It is called as a plain
   function on a stand-in ``self`` whose target assignment returns a fixed
   matching and whose detection losses return zeros: only the embedding term is
   recorded.
2. The enhanced ("patch") pass's proposal selection: the forward of
   ``DNARSRotatedDeformableDetrTransformerTemplateMatching``
   (``AlignRotate/models/utils/dn_ars_rotated_transformer_template_matching.py``)
   with the authors' ``TwoWayTransformer`` (mutual enhancement) at a tiny width.
   Its deformable encoder and decoder are stand-ins (the encoder returns its
   input; the decoder records what it is given), so the recorded numbers are:
   the enhancement's inputs and outputs, the token embeddings, the objectness
   logits, the similarity-times-objectness scores and the indices of the
   selected proposals (recorded from ``torch.topk``).

How the authors' modules are imported: they were written for mmcv 1.x, mmdet
2.x and ARS-DETR's fork of mmrotate, none of which this script needs. Every
``mmcv``/``mmdet``/``mmrotate`` module they import is replaced in
``sys.modules`` by a stub (base classes become ``torch.nn.Module``, registries
and ``force_fp32`` identity decorators, ``reduce_mean`` the identity; any other
stubbed name raises if it is used), and the ``AlignRotate`` packages are
registered without running their ``__init__`` files. Their loss calls
``.cuda()`` on its labels; during the call ``torch.Tensor.cuda`` returns the
tensor itself, so everything runs on CPU in float64.

Sizes are reduced (C = 16, 2 heads, 2 two-way blocks, MLP 32, token head
16-32-16; the authors use 256, 8 heads, 3 blocks, 2048 and 256-1024-256):
the rules under test do not depend on them. Weights and inputs are drawn in
float32 and run in float64; the selection case is stored in float32 (its
weights and inputs exactly), the alignment cases in float64.
"""
import argparse
import os
import os.path as osp
import sys
import types
from typing import Dict, List

import torch
from torch import nn

OUT = osp.join(osp.dirname(osp.abspath(__file__)), 'mutdet_reference.pt')
C, HEADS, DEPTH, MLP_DIM, TOKEN_HIDDEN = 16, 2, 2, 32, 32
SHAPES = ((6, 6), (3, 3))   # two feature levels: 45 tokens
OBJECTS = (5, 3, 1)          # objects per image
TOPK = 10                    # the authors' two_stage_num_proposals
NUM_CLASSES = 3              # encoder class logits; channel 0 is the objectness


# ------------------------------------------------------------------ stubs
class _Unavailable:
    """Stands for an mm* name the authors' modules import but the run never uses."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f'stub {self.name} was called: the reference run needs it')

    def __getattr__(self, attr: str):
        return _Unavailable(f'{self.name}.{attr}')


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith('__'):
            raise AttributeError(attr)
        return _Unavailable(f'{self.__name__}.{attr}')


def install_stubs(root: str) -> None:
    names = [
        'mmcv', 'mmcv.cnn', 'mmcv.cnn.bricks', 'mmcv.cnn.bricks.registry',
        'mmcv.cnn.bricks.transformer', 'mmcv.runner', 'mmcv.ops',
        'mmcv.ops.multi_scale_deform_attn', 'mmdet', 'mmdet.core', 'mmdet.core.bbox',
        'mmdet.core.bbox.transforms', 'mmdet.models', 'mmdet.models.utils',
        'mmdet.models.utils.transformer', 'mmdet.models.builder', 'mmrotate',
        'mmrotate.models', 'mmrotate.models.utils', 'mmrotate.models.utils.builder',
        'mmrotate.models.utils.rotated_transformer', 'mmrotate.models.builder',
        'mmrotate.models.dense_heads', 'mmrotate.models.dense_heads.ars_detr_head',
        'mmrotate.models.dense_heads.dn_ars_detr_head']
    for name in names:
        sys.modules[name] = _StubModule(name)
    registry = _Registry()
    for mod, attr in (('mmcv.cnn.bricks.registry', 'TRANSFORMER_LAYER'),
                      ('mmcv.cnn.bricks.registry', 'TRANSFORMER_LAYER_SEQUENCE'),
                      ('mmrotate.models.utils.builder', 'ROTATED_TRANSFORMER'),
                      ('mmrotate.models.builder', 'ROTATED_HEADS')):
        setattr(sys.modules[mod], attr, registry)
    sys.modules['mmcv.runner'].force_fp32 = lambda **kwargs: (lambda fn: fn)
    sys.modules['mmcv.runner'].ModuleList = nn.ModuleList
    sys.modules['mmdet.core'].reduce_mean = lambda x: x
    # the loss passes converted boxes to the (stubbed, zero) IoU loss only
    sys.modules['mmdet.core.bbox.transforms'].bbox_cxcywh_to_xyxy = lambda x: x
    sys.modules['mmdet.models.utils'].Transformer = nn.Module
    for name in ('ars_detr_head', 'dn_ars_detr_head'):
        mod = sys.modules[f'mmrotate.models.dense_heads.{name}']
        mod.ARSDeformableDETRHead = mod.DNARSDeformableDETRHead = nn.Module
    for pkg in ('AlignRotate', 'AlignRotate.models', 'AlignRotate.models.utils',
                'AlignRotate.models.dense_heads'):
        mod = types.ModuleType(pkg)
        mod.__path__ = [osp.join(root, *pkg.split('.'))]
        sys.modules[pkg] = mod


# ------------------------------------------------------- alignment loss
class _LossSelf:
    """The attributes ``loss_single_with_embed`` reads, with a fixed matching."""

    def __init__(self, num_classes: int, dim: int, matching: List[Dict[int, int]],
                 objects: List[torch.Tensor]) -> None:
        self.cls_out_channels = num_classes
        self.num_classes = num_classes
        self.bg_cls_weight = 0.0
        self.sync_cls_avg_factor = False
        self.coding_len = 4
        self.obj_embed_dim = dim
        self.matching = matching
        self.objects = objects

    @staticmethod
    def _zero(*args, **kwargs) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64)

    loss_cls = loss_bbox = loss_iou = loss_angle = _zero

    def get_targets_with_embed(self, cls_scores_list, bbox_preds_list, angle_preds_list,
                               angle_cls_list, angle_coder, gt_bboxes_list, gt_labels_list,
                               img_metas, gt_bboxes_ignore_list, obj_embed_list):
        out = [[] for _ in range(8)]
        num_pos = num_neg = 0
        for scores, match, objs in zip(cls_scores_list, self.matching, obj_embed_list):
            q = scores.shape[0]
            embed_targets = scores.new_zeros(q, self.obj_embed_dim)
            embed_weights = scores.new_zeros(q)
            for query, gt in match.items():
                embed_targets[query] = objs[gt]
                embed_weights[query] = 1.0
            fixed = (torch.full((q, ), self.num_classes, dtype=torch.long), scores.new_ones(q),
                     scores.new_zeros(q, 4), scores.new_zeros(q, 4),
                     scores.new_zeros(q, self.coding_len), scores.new_zeros(q, self.coding_len),
                     embed_targets, embed_weights)
            for lst, value in zip(out, fixed):
                lst.append(value)
            num_pos += len(match)
            num_neg += q - len(match)
        return (*out, num_pos, num_neg)


def alignment_case(head_cls, seed: int, queries: int, dim: int,
                   matching: List[Dict[int, int]], scale: float) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(matching)
    num_objects = [max(m.values(), default=-1) + 2 for m in matching]
    # the head's forward_train L2-normalises the enhanced objects before the loss
    objects = [torch.nn.functional.normalize(torch.randn(n, dim, generator=g).double(), dim=-1)
               for n in num_objects]
    pred = scale * torch.randn(b, queries, dim, generator=g).double()
    stub = _LossSelf(NUM_CLASSES, dim, matching, objects)
    cls_scores = torch.zeros(b, queries, NUM_CLASSES, dtype=torch.float64)
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        outs = head_cls.loss_single_with_embed(
            stub, cls_scores, torch.zeros(b, queries, 4, dtype=torch.float64),
            torch.zeros(b, queries, dtype=torch.float64),
            torch.zeros(b, queries, 4, dtype=torch.float64), pred, None,
            [None] * b, [None] * b, [dict()] * b, None, objects)
    finally:
        torch.Tensor.cuda = cuda
    pos_b, pos_q, pos_gt = [], [], []
    for j, match in enumerate(matching):
        for query in sorted(match):
            pos_b.append(j)
            pos_q.append(query)
            pos_gt.append(match[query])
    return dict(pred=pred, objects=objects, pos_b=torch.tensor(pos_b),
                pos_q=torch.tensor(pos_q), pos_gt=torch.tensor(pos_gt),
                loss=outs[4].detach(), pos_sim=outs[5], neg_sim=outs[6])


# ------------------------------------------------- enhanced-pass selection
class _Encoder(nn.Module):
    embed_dims = C

    def forward(self, query, **kwargs):
        return query


class _Decoder(nn.Module):
    num_layers = 1

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, query, value, reference_points, **kwargs):
        self.calls.append(dict(value=value.detach().clone(),
                               reference_points=reference_points.detach().clone()))
        n, b, c = query.shape
        return query.new_zeros(1, n, b, c), query.new_zeros(2, b, n, 4)


class _AngleCoder:
    @staticmethod
    def decode(angle_cls: torch.Tensor) -> torch.Tensor:
        return angle_cls[..., 0]


def selection_case(transformer_mod, two_way_cls, seed: int) -> dict:
    torch.manual_seed(seed)
    t = transformer_mod.DNARSRotatedDeformableDetrTransformerTemplateMatching
    model = t.__new__(t)
    nn.Module.__init__(model)
    model.as_two_stage = True
    model.num_feature_levels = len(SHAPES)
    model.two_stage_num_proposals = TOPK
    model.embed_dims = C
    model.with_template_matching = True
    model.encoder, model.decoder = _Encoder(), _Decoder()
    model.level_embeds = nn.Parameter(torch.randn(len(SHAPES), C))
    model.query_embed = nn.Embedding(TOPK, C)
    model.enc_output, model.enc_output_norm = nn.Linear(C, C), nn.LayerNorm(C)
    model.feature_enhance = two_way_cls(depth=DEPTH, embedding_dim=C, num_heads=HEADS,
                                        mlp_dim=MLP_DIM)
    model.patch_enc_output, model.patch_enc_output_norm = nn.Linear(C, C), nn.LayerNorm(C)
    model.patch_enc_decode = nn.Sequential(nn.Linear(C, TOKEN_HIDDEN), nn.ReLU(inplace=True),
                                           nn.Linear(TOKEN_HIDDEN, C))
    # LayerNorm affine parameters away from (1, 0) so that a swapped mapping shows
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
    num_layers = model.decoder.num_layers
    cls_branches = nn.ModuleList(nn.Linear(C, NUM_CLASSES) for _ in range(num_layers + 1))
    reg_branches = nn.ModuleList(nn.Linear(C, 4) for _ in range(num_layers + 1))
    angle_branches = nn.ModuleList(nn.Linear(C, 4) for _ in range(num_layers + 1))
    model = model.double()
    cls_branches, reg_branches, angle_branches = (
        cls_branches.double(), reg_branches.double(), angle_branches.double())
    model.eval()
    for p in model.parameters():  # float32 values, so that the stored weights are exact
        p.data = p.data.float().double()

    b = len(OBJECTS)
    feats = [torch.randn(b, C, h, w).double() for h, w in SHAPES]
    masks = [torch.zeros(b, h, w, dtype=torch.bool) for h, w in SHAPES]
    pos = [torch.randn(b, C, h, w).double() for h, w in SHAPES]
    objects = [torch.randn(n, C).double() for n in OBJECTS]

    enhance_io = []
    hook = model.feature_enhance.register_forward_hook(
        lambda mod, args, out: enhance_io.append(
            (args[0].detach().clone(), args[1].detach().clone(),
             out[0].detach().clone(), out[1].detach().clone())))
    topk_calls = []
    topk = torch.topk

    def recording_topk(*args, **kwargs):
        res = topk(*args, **kwargs)
        topk_calls.append((args[0].detach().clone(), res[1].clone()))
        return res

    torch.topk = recording_topk
    try:
        with torch.no_grad():
            out = model(feats, masks, None, pos, None, None, reg_branches=reg_branches,
                        cls_branches=cls_branches, angle_braches=angle_branches,
                        angle_coder=_AngleCoder(), patch_feats=objects)
    finally:
        torch.topk = topk
        hook.remove()
    # topk calls: the plain pass's (whole batch), then one per image (enhanced pass)
    assert len(topk_calls) == 1 + b and len(enhance_io) == b
    patch_class, patch_embeds = out[11], out[14]
    enhance = model.feature_enhance.state_dict()
    return _float32(dict(
        objects=[io[0][0] for io in enhance_io],
        tokens=torch.cat([io[1] for io in enhance_io]),
        enhanced_objects=[io[2][0] for io in enhance_io],
        enhanced_tokens=torch.cat([io[3] for io in enhance_io]),
        token_embeds=patch_embeds,
        objectness=patch_class[..., 0],
        scores=torch.cat([call[0] for call in topk_calls[1:]]),
        selected=torch.cat([call[1] for call in topk_calls[1:]]),
        enhancement_state={k: v.clone() for k, v in enhance.items()},
        token_head_state={k: v.detach().clone()
                          for k, v in model.patch_enc_decode.state_dict().items()},
        objectness_head_state={k: v.detach().clone()
                               for k, v in cls_branches[num_layers].state_dict().items()},
        config=dict(embed_dims=C, num_heads=HEADS, num_blocks=DEPTH, ffn_channels=MLP_DIM,
                    token_hidden=TOKEN_HIDDEN, topk=TOPK)))


def _float32(obj):
    """Floating tensors of a nested dict / list to float32 (others unchanged)."""
    if isinstance(obj, dict):
        return {k: _float32(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32(v) for v in obj]
    if torch.is_tensor(obj) and obj.is_floating_point():
        return obj.float()
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mutdet_root', nargs='?', default=os.environ.get('MUTDET_ROOT'),
                        help='checkout of floatingstarZ/MutDet (or set MUTDET_ROOT)')
    parser.add_argument('--out', default=OUT)
    args = parser.parse_args()
    if not args.mutdet_root or not osp.isdir(osp.join(args.mutdet_root, 'AlignRotate')):
        parser.error('give the path of a MutDet checkout (the folder holding AlignRotate/)')
    install_stubs(args.mutdet_root)
    import importlib
    head_mod = importlib.import_module(
        'AlignRotate.models.dense_heads.DetReg_dn_ars_detr_headv7')
    transformer_mod = importlib.import_module(
        'AlignRotate.models.utils.dn_ars_rotated_transformer_template_matching')
    two_way = importlib.import_module('AlignRotate.models.utils.transformer').TwoWayTransformer
    head_cls = head_mod.DETReg_DNARSDeformableDETRHeadv7
    alignment = [
        alignment_case(head_cls, 1, 7, 32, [{1: 2, 4: 0, 6: 1}, {0: 1, 3: 0}], 1.0),
        alignment_case(head_cls, 2, 5, 16, [{2: 0}], 3.0),
        alignment_case(head_cls, 3, 30, 16, [{q: q // 2 for q in range(0, 30, 2)},
                                            {q: 20 - q for q in range(1, 21)}], 0.5),
    ]
    selection = selection_case(transformer_mod, two_way, seed=4)
    torch.save(dict(source='floatingstarZ/MutDet@097ce90', alignment=alignment,
                    selection=selection), args.out)
    print(f'wrote {args.out}')
    for i, case in enumerate(alignment):
        print(f'alignment case {i}: {len(case["pos_b"])} pairs, loss {case["loss"].item():.6f}')
    print('selected per image:', selection['selected'].tolist())


if __name__ == '__main__':
    main()
