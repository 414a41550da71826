"""A deterministic synthetic hierarchical oriented-object dataset (DOTA format).

The appearance of every class is derived from its place in the label tree, so
any tree works and the tree config stays the single source of truth. Two cue
schemes (``SyntheticConfig.cues``). ``'rank'`` (the small/medium/large/bench
presets) derives a cue from a node's rank among its siblings, the same in every
branch:

* top-level ancestor  -> shape family (hull, aircraft, vehicle) - coarse cue;
* level-1 ancestor    -> body colour and bow/wing shape         - coarse cue;
* level-2 node        -> number of deck marks and proportions   - subtle cue;
* level-3 node        -> stripe texture period                  - subtle cue.

``'node'`` (the ``hierarchical`` preset) gives every node a cue value of its
own, which all its descendants share and no other branch uses, so that a
classifier cannot learn one "rank" cue for all parents:

* level-0 node -> silhouette (hull, aircraft, vehicle);
* level-1 node -> texture of the body (stripes across / along, diagonals, ...);
* level-2 node -> markings (a pattern of white marks in four slots along the body);
* level-3 node -> a fine detail (a small accent of one of 8 colours at one of 3 places).

Body colour is drawn at random per object there (a nuisance, not a cue).

Objects of internal nodes are written as ``Other <node>`` (so the dataset's
"Other X" reallocation is exercised) and drawn with their node's cues but
none of the children's. Leaf frequencies are long-tailed: sampled with
head/tail ratio ``imbalance``, or, with ``leaf_counts=(most, least)``, exact
training object counts per leaf (geometric from most to least). Images hold
several rotated objects, some overlapping, some cut by the border (difficulty 1).
"""
from __future__ import annotations

import colorsys
import json
import os
import os.path as osp
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..structures.geometry import rbox_to_poly
from ..structures.label_tree import LabelTree
from .dota_txt import format_dota_line

GENERATOR_VERSION = 2
FAMILIES = ('hull', 'aircraft', 'vehicle')


@dataclass
class SyntheticConfig:
    """Size and statistics of a generated dataset."""
    num_train: int = 48
    num_val: int = 16
    img_size: int = 256
    min_objects: int = 3
    max_objects: int = 8
    min_length: float = 28.0
    max_length: float = 64.0
    imbalance: float = 30.0      # frequency of the most / least frequent leaf
    other_ratio: float = 0.08    # share of objects labelled "Other <internal node>"
    border_ratio: float = 0.12   # share of objects placed across the image border
    seed: int = 0
    # draw validation leaves uniformly (train stays long-tailed), as long-tail
    # benchmarks do, so that tail classes have as many test objects as head ones
    val_balanced: bool = False
    cues: str = 'rank'           # 'rank' (sibling rank) or 'node' (node-specific cues)
    # exact training objects of the most and the least frequent leaf (geometric in
    # between, spread over ``num_train`` images); None: leaves sampled by ``imbalance``
    leaf_counts: Optional[Tuple[int, int]] = None

    @classmethod
    def preset(cls, name: str, **overrides) -> 'SyntheticConfig':
        presets = {
            'small': {},
            'medium': dict(num_train=400, num_val=100, img_size=384),
            'large': dict(num_train=2000, num_val=500, img_size=512, max_objects=12),
            # benchmarks/synthetic_ablation.py: small images so that a CPU run
            # learns localisation in minutes; balanced validation for the tail
            'bench': dict(num_train=800, num_val=300, img_size=128, min_objects=2,
                          max_objects=5, min_length=24.0, max_length=48.0,
                          border_ratio=0.05, val_balanced=True),
            # a task where the hierarchy matters (tree:
            # configs/_base_/datasets/synthetic_hierarchical_label_tree.py): node-specific
            # cues, exact leaf counts 500 .. 5 (head/tail 100x, the least frequent
            # third of 24 leaves has 5-20 training objects), ~3.7 objects per image,
            # 1200 balanced validation images (~170 objects per leaf)
            'hierarchical': dict(num_train=800, num_val=1200, img_size=128, min_objects=2,
                                 max_objects=5, min_length=32.0, max_length=56.0,
                                 border_ratio=0.05, val_balanced=True, cues='node',
                                 leaf_counts=(500, 5)),
        }
        if name not in presets:
            raise ValueError(f'unknown synthetic preset {name!r}; choose from {sorted(presets)}')
        return cls(**{**presets[name], **overrides})

    def __post_init__(self):
        if self.cues not in ('rank', 'node'):
            raise ValueError(f"cues must be 'rank' or 'node', got {self.cues!r}")
        if self.leaf_counts is not None:
            most, least = self.leaf_counts
            if not 1 <= least <= most:
                raise ValueError(f'leaf_counts must be (most, least) with 1 <= least <= most, '
                                 f'got {self.leaf_counts}')
            self.leaf_counts = (int(most), int(least))


# fields added after generator version 2: left out of the recorded settings at their
# default, so that datasets of the older presets keep their meta.json
_LATER_FIELDS = {'cues': 'rank', 'leaf_counts': None}


@dataclass
class ClassStyle:
    family: str
    colour: Tuple[int, int, int]
    bow: float        # 0..1, sharpness of the bow / sweep of the wings
    marks: int        # number of deck marks (0 = none, "Other" objects)
    aspect: float     # length / width
    stripes: int      # stripe period in px (0 = plain)


def _sibling_rank(tree: LabelTree, k: int) -> int:
    p = tree.parent[k]
    siblings = tree.children[p] if p >= 0 else tree.nodes_at_level(0)
    return siblings.index(k)


def class_styles(tree: LabelTree) -> List[ClassStyle]:
    """Appearance of each node, derived from its root-to-node path."""
    styles = []
    for k in range(tree.num_classes):
        path = tree.path_ids(k)
        ranks = [_sibling_rank(tree, a) for a in path]
        family = FAMILIES[ranks[0] % len(FAMILIES)]
        r1 = ranks[1] if len(ranks) > 1 else -1
        hue = (0.08 + 0.37 * (r1 + 1) + 0.11 * ranks[0]) % 1.0
        sat = 0.15 if r1 < 0 else 0.55
        colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, 0.85))
        r2 = ranks[2] if len(ranks) > 2 else -1
        r3 = ranks[3] if len(ranks) > 3 else -1
        base_aspect = {'hull': 4.0, 'aircraft': 1.15, 'vehicle': 2.2}[family]
        styles.append(ClassStyle(
            family=family, colour=colour,
            bow=0.25 + 0.5 * (r1 % 2) if r1 >= 0 else 0.5,
            marks=r2 + 1 if r2 >= 0 else 0,
            aspect=base_aspect * (1.0 + 0.12 * max(r2, 0)),
            stripes=(3 + 2 * r3) if r3 >= 0 else 0))
    return styles


def leaf_frequencies(tree: LabelTree, imbalance: float, seed: int) -> Dict[int, float]:
    """Long-tailed sampling weights over leaves (max/min = ``imbalance``)."""
    leaves = list(tree.leaf_ids)
    order = np.random.default_rng(seed + 7919).permutation(len(leaves))
    n = max(len(leaves) - 1, 1)
    return {leaves[i]: float(imbalance ** (-rank / n)) for rank, i in enumerate(order)}


def leaf_counts(tree: LabelTree, most: int, least: int, seed: int) -> Dict[int, int]:
    """Exact training objects per leaf: ``round(geomspace(most, least))`` over the
    leaves, in the same seeded order as :func:`leaf_frequencies`."""
    leaves = list(tree.leaf_ids)
    order = np.random.default_rng(seed + 7919).permutation(len(leaves))
    counts = np.round(np.geomspace(most, least, len(leaves))).astype(int)
    return {leaves[i]: int(c) for c, i in zip(counts, order)}


# ----------------------------------------------------------- node-specific cues
TEXTURES = ('stripes_across', 'stripes_along', 'diagonal', 'anti_diagonal', 'checker', 'dots',
            'grid')
# markings: which of four slots along the body carry a white mark (bit i = slot i)
MARKINGS = tuple(range(1, 16))
ACCENT_HUES = tuple(i / 8 for i in range(8))
ACCENT_PLACES = ('bow', 'stern', 'side')
DETAILS = tuple((h, p) for h in range(len(ACCENT_HUES)) for p in range(len(ACCENT_PLACES)))
ASPECTS = {'hull': 4.0, 'aircraft': 1.15, 'vehicle': 2.2}
_CUE_VALUES = (FAMILIES, TEXTURES, MARKINGS, DETAILS)
CUE_NAMES = ('silhouette', 'texture', 'markings', 'detail')


@dataclass
class NodeStyle:
    """Cues of a node under ``cues='node'``: the value at level l is that of the
    node's level-l ancestor (None below the node's own level)."""
    silhouette: str
    texture: Optional[str]
    markings: Optional[int]              # bit pattern over 4 slots, 1..15
    detail: Optional[Tuple[int, int]]    # (accent hue index, place index)
    aspect: float


def node_styles(tree: LabelTree) -> List[NodeStyle]:
    """Node-specific cues: the i-th node of level l (in class order) gets the i-th
    value of that level's cue, so no two nodes of a level share a value."""
    if tree.num_levels > len(_CUE_VALUES):
        raise ValueError(f"cues='node' draws at most {len(_CUE_VALUES)} levels; the tree has "
                         f'{tree.num_levels}')
    value = {}
    for level, values in enumerate(_CUE_VALUES[:tree.num_levels]):
        nodes = tree.nodes_at_level(level)
        if len(nodes) > len(values):
            raise ValueError(f"cues='node': level {level} has {len(nodes)} nodes but only "
                             f'{len(values)} distinct {CUE_NAMES[level]} values')
        value.update({k: values[i] for i, k in enumerate(nodes)})
    styles = []
    for k in range(tree.num_classes):
        cues = [value[a] for a in tree.path_ids(k)] + [None] * len(_CUE_VALUES)
        styles.append(NodeStyle(silhouette=cues[0], texture=cues[1], markings=cues[2],
                                detail=cues[3], aspect=ASPECTS[cues[0]]))
    return styles


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float = 5.0) -> np.ndarray:
    """Boolean pattern over object-frame coordinates ``u`` (along) / ``v`` (across), px."""
    def band(x):
        return np.mod(x, period) < period / 2
    if kind == 'stripes_across':
        return band(u)
    if kind == 'stripes_along':
        return band(v)
    if kind == 'diagonal':
        return band((u + v) / np.sqrt(2))
    if kind == 'anti_diagonal':
        return band((u - v) / np.sqrt(2))
    if kind == 'checker':
        return band(u) ^ band(v)
    if kind == 'dots':
        return np.hypot(np.mod(u, period) - period / 2, np.mod(v, period) - period / 2) < 1.2
    if kind == 'grid':
        return (np.mod(u, period) < 1.2) | (np.mod(v, period) < 1.2)
    raise ValueError(f'unknown texture {kind!r}')


def _draw_body(img: np.ndarray, parts: List[np.ndarray], rbox, colour, texture: Optional[str]):
    """Fill the silhouette ``parts`` (object frame) with ``colour``, darkened where
    ``texture`` is on."""
    cx, cy, _, _, t = rbox
    polys = [_to_image(p, cx, cy, t) for p in parts]
    allp = np.concatenate(polys)
    size = img.shape[0]
    x0, y0 = np.maximum(np.floor(allp.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(allp.max(0)).astype(int) + 2, size)
    if x1 <= x0 or y1 <= y0:
        return
    # parts after the first (cab, wings, tail) a shade darker: the front stays
    # visible, so that bow and stern accents differ under a 180-degree turn
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    for i, p in enumerate(polys):
        cv2.fillPoly(mask, [np.round((p - [x0, y0]) * 16).astype(np.int32)],
                     1.0 if i == 0 else 0.8, shift=4)
    ys, xs = np.nonzero(mask)
    dx, dy = xs + x0 + 0.5 - cx, ys + y0 + 0.5 - cy
    u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
    shade = mask[ys, xs] * (np.where(_texture(texture, u, v), 0.5, 1.0) if texture else 1.0)
    img[ys + y0, xs + x0] = np.clip(np.asarray(colour)[None] * shade[:, None], 0, 255)


def draw_node_object(img: np.ndarray, rbox, style: NodeStyle, rng: np.random.Generator) -> None:
    """Draw one object with node-specific cues; ``rbox = (cx, cy, L, W, t)``."""
    cx, cy, length, width, t = rbox
    hue, sat = rng.uniform(0, 1), rng.uniform(0.05, 0.3)
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, rng.uniform(0.7, 0.9)))
    shape = ClassStyle(family=style.silhouette, colour=colour, bow=0.5, marks=0,
                       aspect=style.aspect, stripes=0)
    _draw_body(img, _shape(shape, length, width), rbox, colour, style.texture)
    L, W = length / 2, width / 2
    half_body = W if style.silhouette != 'aircraft' else max(W * 0.16, 1.5)
    mark = max(min(half_body * 0.6, L * 0.07), 1.5)
    for slot, x in enumerate((-0.55, -0.2, 0.15, 0.5)):
        if style.markings and style.markings >> slot & 1:
            square = np.array([[-mark, -mark], [mark, -mark], [mark, mark], [-mark, mark]])
            _fill(img, _to_image(square + [x * L, 0], cx, cy, t), (235, 235, 235))
    if style.detail is not None:
        h, place = style.detail
        accent = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(ACCENT_HUES[h], 1.0, 1.0))
        at = {'bow': (0.72 * L, 0.0), 'stern': (-0.85 * L, 0.0),
              'side': (0.0, 0.6 * W)}[ACCENT_PLACES[place]]
        d = max(mark * 0.8, 1.5)
        square = np.array([[-d, -d], [d, -d], [d, d], [-d, d]]) + at
        _fill(img, _to_image(square, cx, cy, t), accent)


def _shape(style: ClassStyle, length: float, width: float) -> List[np.ndarray]:
    """Body polygons in the object frame (x along the length, y across)."""
    L, W = length / 2, width / 2
    if style.family == 'hull':
        bow = W * (0.6 + 2.0 * style.bow)
        return [np.array([[-L, -W], [L - bow, -W], [L, 0], [L - bow, W], [-L, W]])]
    if style.family == 'aircraft':
        fus = max(W * 0.16, 1.5)
        sweep = L * 0.35 * style.bow
        wing = np.array([[0.15 * L, -fus], [-0.1 * L - sweep, -W], [-0.3 * L - sweep, -W],
                         [-0.15 * L, -fus], [-0.15 * L, fus], [-0.3 * L - sweep, W],
                         [-0.1 * L - sweep, W], [0.15 * L, fus]])
        body = np.array([[-L, -fus], [L - fus, -fus], [L, 0], [L - fus, fus], [-L, fus]])
        tail = np.array([[-0.75 * L, -fus], [-L, -0.35 * W], [-L, 0.35 * W], [-0.75 * L, fus]])
        return [body, wing, tail]
    cab = L * (0.25 + 0.3 * style.bow)
    return [np.array([[-L, -W], [L, -W], [L, W], [-L, W]]),
            np.array([[L - cab, -W * 0.8], [L * 0.95, -W * 0.8], [L * 0.95, W * 0.8],
                      [L - cab, W * 0.8]])]


def _to_image(pts: np.ndarray, cx: float, cy: float, t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.stack([cx + pts[:, 0] * c - pts[:, 1] * s, cy + pts[:, 0] * s + pts[:, 1] * c], 1)


def _fill(img: np.ndarray, pts: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=4)


def draw_object(img: np.ndarray, rbox, style: ClassStyle, rng: np.random.Generator) -> None:
    """Draw one object whose oriented box is ``rbox = (cx, cy, L, W, t)``."""
    cx, cy, length, width, t = rbox
    jitter = rng.integers(-18, 19, size=3)
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(style.colour, jitter))
    dark = tuple(int(c * 0.35) for c in colour)
    parts = _shape(style, length, width)
    for i, part in enumerate(parts):
        _fill(img, _to_image(part, cx, cy, t), colour if i == 0 else tuple(
            int(c * 0.85) for c in colour))
    L, W = length / 2, width / 2
    if style.stripes:
        for x in np.arange(-L * 0.8, L * 0.6, style.stripes * 2.0):
            stripe = np.array([[x, -W * 0.5], [x + style.stripes, -W * 0.5],
                               [x + style.stripes, W * 0.5], [x, W * 0.5]])
            _fill(img, _to_image(stripe, cx, cy, t), tuple(int(c * 0.7) for c in colour))
    mark = max(min(W * 0.45, L * 0.12), 1.5)
    for i in range(style.marks):
        x = -L * 0.6 + (i + 0.5) * (L * 1.1) / style.marks
        square = np.array([[x - mark, -mark], [x + mark, -mark], [x + mark, mark], [x - mark, mark]])
        _fill(img, _to_image(square, cx, cy, t), dark)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(rng.choice([[70, 90, 120], [95, 110, 80], [120, 115, 100]]), dtype=np.float32)
    low = rng.normal(0, 18, size=(size // 32 + 2, size // 32 + 2, 3)).astype(np.float32)
    img = base + cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _sample_label(tree: LabelTree, weights: Dict[int, float], internal: List[int],
                  cfg: SyntheticConfig, rng: np.random.Generator) -> int:
    if internal and rng.random() < cfg.other_ratio:
        return int(rng.choice(internal))
    leaves = list(weights)
    p = np.array([weights[k] for k in leaves])
    return int(rng.choice(leaves, p=p / p.sum()))


def _place(cfg: SyntheticConfig, length: float, placed: List[Tuple[float, float, float]],
           rng: np.random.Generator) -> Optional[Tuple[float, float]]:
    S = cfg.img_size
    for _ in range(40):
        across = rng.random() < cfg.border_ratio
        if across:  # centre inside, body sticking out of one side
            d = rng.uniform(0.05, 0.35) * length
            side = rng.integers(4)
            u = rng.uniform(d, S - d)
            cx, cy = [(d, u), (S - d, u), (u, d), (u, S - d)][side]
        else:
            m = length / 2
            cx, cy = rng.uniform(m, S - m), rng.uniform(m, S - m)
        # some overlap is fine, stacked objects are not
        if all(np.hypot(cx - x, cy - y) > 0.45 * (length + n) / 2 for x, y, n in placed):
            return cx, cy
    return None


def render_image(tree: LabelTree, styles, weights: Dict[int, float], cfg: SyntheticConfig,
                 rng: np.random.Generator, labels: Optional[List[int]] = None):
    """One image, its objects ``[(poly8, node, truncated)]`` and the nodes of
    ``labels`` that found no place (objects are sampled when ``labels`` is None)."""
    img = _background(cfg.img_size, rng)
    internal = [k for k in range(tree.num_classes) if not tree.is_leaf(k)]
    objects, placed, unplaced = [], [], []
    if labels is None:
        labels = [None] * int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for k in labels:
        if k is None:
            k = _sample_label(tree, weights, internal, cfg, rng)
        style = styles[k]
        length = rng.uniform(cfg.min_length, cfg.max_length)
        width = length / style.aspect * rng.uniform(0.95, 1.05)
        pos = _place(cfg, length, placed, rng)
        if pos is None:
            unplaced.append(k)
            continue
        cx, cy = pos
        t = rng.uniform(-np.pi, np.pi)
        draw = draw_node_object if isinstance(style, NodeStyle) else draw_object
        draw(img, (cx, cy, length, width, t), style, rng)
        placed.append((cx, cy, length))
        poly = rbox_to_poly([[cx, cy, length, width, t]])[0]
        truncated = bool(poly.min() < 0 or poly.max() > cfg.img_size)
        objects.append((poly, k, truncated))
    return img, objects, unplaced


def training_pool(tree: LabelTree, cfg: SyntheticConfig) -> List[int]:
    """Shuffled node labels of every training object under ``cfg.leaf_counts``:
    the exact leaf counts plus ``other_ratio`` of "Other" objects on internal nodes."""
    counts = leaf_counts(tree, *cfg.leaf_counts, cfg.seed)
    rng = np.random.default_rng([cfg.seed, 2])
    pool = [k for k, c in counts.items() for _ in range(c)]
    internal = [k for k in range(tree.num_classes) if not tree.is_leaf(k)]
    num_other = round(cfg.other_ratio * len(pool) / (1 - cfg.other_ratio)) if internal else 0
    pool += [int(k) for k in rng.choice(internal, size=num_other)] if num_other else []
    return [int(k) for k in rng.permutation(pool)]


def _annotation_name(tree: LabelTree, k: int) -> str:
    return tree.classes[k] if tree.is_leaf(k) else f'Other {tree.classes[k]}'


def generate_synthetic_dataset(out_dir: str, label_tree, cfg: Optional[SyntheticConfig] = None,
                               overwrite: bool = False) -> dict:
    """Write ``out_dir/{train,val}/{images,labelTxt}`` and ``out_dir/meta.json``.

    Deterministic for a given tree and ``cfg``; if ``meta.json`` already
    records the same tree and settings the files are kept (returns the meta).
    Returns the meta: settings and per-split object counts per class name.
    """
    tree = LabelTree.from_config(label_tree)
    cfg = cfg or SyntheticConfig()
    fields = {k: v for k, v in asdict(cfg).items()
              if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
    settings = json.loads(json.dumps(dict(fields, generator_version=GENERATOR_VERSION,
                                          classes=list(tree.classes),
                                          parents=list(tree.parent))))
    meta_path = osp.join(out_dir, 'meta.json')
    if osp.exists(meta_path) and not overwrite:
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get('settings') == settings:
            return meta
    styles = class_styles(tree) if cfg.cues == 'rank' else node_styles(tree)
    train_weights = leaf_frequencies(tree, cfg.imbalance, cfg.seed)
    val_weights = ({k: 1.0 for k in train_weights} if cfg.val_balanced else train_weights)
    counts = {}
    for split, num, offset in (('train', cfg.num_train, 0), ('val', cfg.num_val, 1)):
        weights = train_weights if split == 'train' else val_weights
        rng = np.random.default_rng([cfg.seed, offset])
        img_dir, ann_dir = osp.join(out_dir, split, 'images'), osp.join(out_dir, split, 'labelTxt')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        count = Counter()
        pool = training_pool(tree, cfg) if split == 'train' and cfg.leaf_counts else None
        chunks = np.array_split(np.array(pool, dtype=int), num) if pool is not None else None
        carry = []  # objects that found no place wait for the next image
        for i in range(num):
            labels = carry + [int(k) for k in chunks[i]] if chunks is not None else None
            img, objects, unplaced = render_image(tree, styles, weights, cfg, rng, labels)
            carry = unplaced if chunks is not None else []
            stem = f'{split}_{i:05d}'
            cv2.imwrite(osp.join(img_dir, stem + '.png'), img[..., ::-1])
            lines = ['imagesource:bhcl-synthetic', 'gsd:0.5']
            for poly, k, truncated in objects:
                name = _annotation_name(tree, k)
                lines.append(format_dota_line(poly, name, int(truncated)))
                count[name] += 1
            with open(osp.join(ann_dir, stem + '.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
        if carry:
            raise RuntimeError(f'{len(carry)} training objects found no place in the last image; '
                               'raise num_train or img_size, or lower max_length')
        counts[split] = dict(sorted(count.items(), key=lambda kv: -kv[1]))
    meta = dict(settings=settings, counts=counts)
    with open(meta_path, 'w') as f:
        json.dump(meta, f, indent=1)
    return meta
