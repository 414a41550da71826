"""Run a trained bhcl detector on images of your own (mmdet ``DetInferencer`` style).

    from bhcl.apis import RotatedDetInferencer
    inferencer = RotatedDetInferencer('configs/synthetic/bhcl-...py', 'epoch_12.pth')
    out = inferencer('images/', batch_size=4, out_dir='vis/')   # drawn images + JSON
    dets = inferencer.predict(['a.png', bgr_array])               # TreeDetections per image

Inputs are image paths, folders of images, or ``(H, W, 3)`` uint8 BGR arrays (mmcv's
convention). The model's test pipeline runs as in ``tools/test.py`` (its ground-truth
loading steps removed), so each image is resized as in training and the boxes come
back in the input's pixels. Each prediction carries its leaf (or node), the path
from the top of the label tree and a score per level (``TreeDetections``).
"""
from __future__ import annotations

import copy
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..datasets.formats import IMG_SUFFIXES
from ..engine.checkpoint_io import describe_mismatch, state_dict_mismatch
from ..structures.box_coding import box_tensor
from ..structures.label_tree import LabelTree
from .tree_detections import TreeDetections, level_scores

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ImageInput = Union[str, np.ndarray]
# pipeline steps that only load or convert ground truth (absent at inference)
GT_STEPS = ('LoadAnnotations', 'ConvertBoxType', 'FilterAnnotations')


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the model the config builds."""


def resolve_config(config: str) -> str:
    """A config path, or the name of a config under ``configs/`` (with or without
    ``.py``), -> its path. Raises ``FileNotFoundError`` naming close names."""
    if osp.isfile(config):
        return config
    name = osp.basename(config)
    name = name if name.endswith('.py') else name + '.py'
    hits = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '**', name), recursive=True))
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise FileNotFoundError(f'config name {config!r} matches several configs: {hits}; '
                                'give the path')
    import difflib
    known = [osp.basename(p)[:-3] for p in
             glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)]
    close = difflib.get_close_matches(name[:-3], known, n=3)
    raise FileNotFoundError(f'config {config!r} is neither a file nor a config name under '
                            f'configs/' + (f'; did you mean {", ".join(close)}?' if close else ''))


def load_state_dict_strict(model, checkpoint: str) -> dict:
    """Load ``checkpoint`` into ``model`` only if every key and shape matches.

    Raises ``CheckpointMismatchError`` listing the missing, unexpected and
    mis-shaped keys (the usual cause: a checkpoint trained with another config).
    Returns the checkpoint's ``meta`` (may be empty).
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    try:
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointMismatchError(f'{checkpoint}: cannot be read as a PyTorch checkpoint '
                                      f'({type(e).__name__}: {e})') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f'{checkpoint}: holds no state_dict')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointMismatchError(
            f'{checkpoint} does not match the model built from the config:\n'
            + describe_mismatch(mismatch)
            + '\nUse the config the checkpoint was trained with (its work_dir holds a copy).')
    model.load_state_dict(state, strict=True)
    return ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}


def list_images(inputs: Union[ImageInput, Sequence[ImageInput]]) -> List[ImageInput]:
    """Expand folders into their images (sorted; suffixes of ``IMG_SUFFIXES``)."""
    if isinstance(inputs, (str, np.ndarray)):
        inputs = [inputs]
    out = []
    for item in inputs:
        if isinstance(item, np.ndarray):
            out.append(item)
        elif osp.isdir(item):
            found = sorted(osp.join(item, f) for f in os.listdir(item)
                           if f.rsplit('.', 1)[-1].lower() in IMG_SUFFIXES)
            if not found:
                raise FileNotFoundError(f'no images ({", ".join(IMG_SUFFIXES)}) in {item!r}')
            out.extend(found)
        elif osp.isfile(item):
            out.append(item)
        else:
            raise FileNotFoundError(f'input {item!r} is neither an image file nor a folder')
    return out


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR, as the training pipeline reads it (mmcv / OpenCV)."""
    import mmcv
    try:
        img = mmcv.imread(path, channel_order='bgr')
    except Exception as e:
        raise OSError(f'{path}: cannot be read as an image ({e})') from e
    if img is None:
        raise OSError(f'{path}: cannot be read as an image (empty, truncated or not an image)')
    return img


class RotatedDetInferencer:
    """Hierarchical rotated detection on images, arrays and folders.

    Args:
        model: a config path, or the name of a config under ``configs/``.
        weights: checkpoint path (or URL). ``None`` keeps the modules' default
            (random) initialisation, for tests. It must match the config: every key
            and shape, else ``CheckpointMismatchError`` lists the differences.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``; default CUDA when available.
        cfg_options: config overrides (``{'model.test_cfg.max_per_img': 50}``).
    """

    def __init__(self, model: str, weights: Optional[str] = None, device: Optional[str] = None,
                 cfg_options: Optional[dict] = None) -> None:
        import torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmrotate.registry import MODELS

        import bhcl  # noqa: F401  (registers bhcl's modules)
        self.config_path = resolve_config(model)
        cfg = Config.fromfile(self.config_path)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        init_default_scope(cfg.get('default_scope', 'mmrotate'))
        cfg.model.setdefault('test_cfg', {})
        cfg.model.test_cfg['return_node_scores'] = True
        self.cfg = cfg
        self.device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        model_cfg = copy.deepcopy(cfg.model)
        self.model = MODELS.build(model_cfg)
        self.checkpoint_meta = ({} if weights is None
                                else load_state_dict_strict(self.model, weights))
        self.model.to(self.device).eval()
        self.tree = self._label_tree()
        self.pipeline = self._build_pipeline()
        self._visualizer = None

    # ------------------------------------------------------------- set-up
    def _label_tree(self) -> LabelTree:
        """The model's tree, else the config's ``label_tree``, else a flat one."""
        tree = getattr(self.model, 'label_tree', None)
        if tree is not None:
            return tree
        if self.cfg.get('label_tree') is not None:
            return LabelTree.from_config(self.cfg.label_tree)
        meta = self.cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo', {})
        if meta and meta.get('classes'):
            classes = list(meta['classes'])
            return LabelTree(classes, [None] * len(classes))
        raise ValueError(f'{self.config_path}: no label_tree in the model or the config, and no '
                         'test_dataloader.dataset.metainfo.classes; cannot name the classes')

    def _build_pipeline(self):
        from mmcv.transforms import Compose
        steps = copy.deepcopy(self.cfg.test_dataloader.dataset.pipeline)
        steps = [s for s in steps if not str(s['type']).split('.')[-1].startswith(GT_STEPS)]
        if not steps or 'LoadImage' not in str(steps[0]['type']):
            raise ValueError(f'{self.config_path}: the test pipeline does not start by loading '
                             'the image; cannot adapt it for inference')
        steps[0] = dict(type='mmdet.LoadImageFromNDArray')
        return Compose(steps)

    @property
    def input_scale(self) -> Optional[int]:
        """The long side the test pipeline resizes images to (None without a Resize)."""
        for step in self.cfg.test_dataloader.dataset.pipeline:
            if str(step['type']).split('.')[-1] == 'Resize' and 'scale' in step:
                scale = step['scale']
                return int(max(scale) if isinstance(scale, (list, tuple)) else scale)
        return None

    # ------------------------------------------------------------ predict
    def predict(self, inputs: Union[ImageInput, Sequence[ImageInput]],
                batch_size: int = 1) -> List[TreeDetections]:
        """One ``TreeDetections`` per image (folders expanded, sorted)."""
        items = list_images(inputs)
        return [det for _, det in self.iter_predict(items, batch_size)]

    def iter_predict(self, items: Sequence[ImageInput], batch_size: int = 1):
        """Yield ``(image array, TreeDetections)`` per item, running ``batch_size`` at once."""
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            imgs = [read_image(i) if isinstance(i, str) else _check_array(i) for i in chunk]
            paths = [i if isinstance(i, str) else None for i in chunk]
            yield from zip(imgs, self.predict_arrays(imgs, paths))

    def predict_arrays(self, imgs: Sequence[np.ndarray],
                       paths: Optional[Sequence[Optional[str]]] = None) -> List[TreeDetections]:
        """(H, W, 3) uint8 BGR arrays -> one ``TreeDetections`` each, in one batch."""
        import torch
        from mmengine.dataset import pseudo_collate
        paths = list(paths) if paths is not None else [None] * len(imgs)
        data = [self.pipeline(dict(img=img, img_id=i, img_path=p))
                for i, (img, p) in enumerate(zip(imgs, paths))]
        with torch.no_grad():
            samples = self.model.test_step(pseudo_collate(data))
        return [self._to_tree_detections(s, img.shape[:2], p)
                for s, img, p in zip(samples, imgs, paths)]

    def _to_tree_detections(self, sample, shape, path) -> TreeDetections:
        pred = sample.pred_instances
        boxes = box_tensor(pred.bboxes).detach().cpu().numpy()
        scores = pred.scores.detach().cpu().numpy()
        labels = pred.labels.detach().cpu().numpy()
        node = pred.node_scores.detach().cpu().numpy() if 'node_scores' in pred else None
        return TreeDetections(boxes, scores, labels, level_scores(self.tree, labels, scores, node),
                              self.tree, img_path=path, img_shape=tuple(shape))

    def predict_scene(self, path: str, **kwargs):
        """Detections on a whole scene by sliding windows: ``infer_scene(self, path,
        **kwargs)`` (patch size / overlap, batch size, score threshold, bands, ...);
        write them with ``bhcl.apis.write_scene_outputs``."""
        from .scene_inference import infer_scene
        return infer_scene(self, path, **kwargs)

    # --------------------------------------------------------------- call
    def __call__(self, inputs: Union[ImageInput, Sequence[ImageInput]], batch_size: int = 1,
                 out_dir: str = '', return_vis: bool = False, pred_score_thr: float = 0.3,
                 no_save_vis: bool = False, no_save_pred: bool = False) -> dict:
        """mmdet ``DetInferencer``-like call.

        Returns ``dict(predictions=[...], visualization=[...])``: one JSON-ready
        dict per image (``TreeDetections.to_dict``; all predictions, thresholded
        only in the drawings) and, with ``return_vis``, the drawn RGB images.
        With ``out_dir``: ``out_dir/vis/<name>.png`` drawn images (boxes with
        score >= ``pred_score_thr``, labelled with node and tree path) and
        ``out_dir/preds/<name>.json``.
        """
        items = list_images(inputs)
        preds, vis = [], []
        for n, (img, det) in enumerate(self.iter_predict(items, batch_size)):
            name = (osp.splitext(osp.basename(det.img_path))[0] if det.img_path
                    else f'{n:08d}')
            preds.append(det.to_dict())
            drawn = None
            if return_vis or (out_dir and not no_save_vis):
                out_file = osp.join(out_dir, 'vis', name + '.png') if (
                    out_dir and not no_save_vis) else None
                drawn = self.visualize(img, det, pred_score_thr, out_file)
            if return_vis:
                vis.append(drawn)
            if out_dir and not no_save_pred:
                os.makedirs(osp.join(out_dir, 'preds'), exist_ok=True)
                with open(osp.join(out_dir, 'preds', name + '.json'), 'w') as f:
                    json.dump(preds[-1], f, indent=1)
        return dict(predictions=preds, visualization=vis)

    # ---------------------------------------------------------- visualise
    @property
    def visualizer(self):
        """A ``HierarchicalLocalVisualizer`` (boxes labelled with node and tree path)."""
        if self._visualizer is None:
            from ..datasets.hierarchical_dota import tree_palette
            from ..visualization import HierarchicalLocalVisualizer
            self._visualizer = HierarchicalLocalVisualizer(name=f'bhcl_inferencer_{id(self)}')
            self._visualizer.dataset_meta = dict(
                classes=self.tree.classes, label_tree=self.tree.to_config(),
                palette=tree_palette(self.tree.num_classes))
        return self._visualizer

    def visualize(self, img: np.ndarray, det: TreeDetections, pred_score_thr: float = 0.3,
                  out_file: Optional[str] = None) -> np.ndarray:
        """Draw ``det`` on the BGR ``img``; returns the RGB drawing (and writes ``out_file``)."""
        import torch
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        from mmrotate.structures.bbox import RotatedBoxes
        sample = DetDataSample()
        sample.pred_instances = InstanceData(
            bboxes=RotatedBoxes(torch.as_tensor(det.rboxes, dtype=torch.float32)),
            scores=torch.as_tensor(det.scores, dtype=torch.float32),
            labels=torch.as_tensor(det.labels, dtype=torch.long))
        if out_file:
            os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
        self.visualizer.add_datasample('image', np.ascontiguousarray(img[..., ::-1]), sample,
                                       draw_gt=False, show=False, out_file=out_file,
                                       pred_score_thr=pred_score_thr)
        return self.visualizer.get_image()


def _check_array(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f'array inputs must be (H, W, 3) uint8 BGR images, got shape '
                         f'{img.shape} and dtype {img.dtype}')
    return img

