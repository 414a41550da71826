"""PseudoLabelDataset and its transforms: embeddings stay aligned with their boxes
through resize, flips and filtering; bad files give clear errors."""
import math

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmrotate.registry import DATASETS, TRANSFORMS

import bhcl  # noqa: F401

K = 8
# (cx, cy, w, h, t) in a 64 x 48 image; the third box becomes < 2 px at half size
BOXES = torch.tensor([[20., 12., 16., 8., 0.3], [44., 30., 12., 10., -0.7],
                      [10., 40., 3., 2., 0.0], [50., 10., 8., 6., 1.2]])


def write_data(root, n_images=2, missing_pseudo=False):
    img_dir, ps_dir = root / 'images', root / 'pseudo'
    img_dir.mkdir()
    ps_dir.mkdir()
    for i in range(n_images):
        img = np.full((48, 64, 3), 30 + 40 * i, np.uint8)
        cv2.imwrite(str(img_dir / f'img{i}.png'), img)
        if missing_pseudo and i == n_images - 1:
            continue
        n = len(BOXES) - i
        # embedding row j encodes (image, box) so that alignment can be read back
        emb = torch.zeros(n, 16)
        emb[:, 0] = torch.arange(n).float()
        emb[:, 1] = i
        torch.save(dict(image=f'img{i}.png', boxes=BOXES[:n].clone(),
                        labels=torch.arange(n) % K, embeddings=emb), ps_dir / f'img{i}.pth')
    return root


def pipeline(min_size=2.0, flip='horizontal'):
    return [
        dict(type='mmdet.LoadImageFromFile'),
        dict(type='LoadPseudoLabels'),
        dict(type='mmdet.Resize', scale=(32, 24), keep_ratio=True),
        dict(type='mmdet.RandomFlip', prob=1.0, direction=flip),
        dict(type='FilterPseudoLabels', min_size=min_size),
        dict(type='PackPseudoLabelInputs')
    ]


def dataset(root, pipe=None):
    init_default_scope('mmrotate')
    return DATASETS.build(dict(type='PseudoLabelDataset', num_classes=K, data_root=str(root),
                               data_prefix=dict(img_path='images', pseudo_path='pseudo'),
                               pipeline=pipe if pipe is not None else pipeline()))


def expected_after(boxes, flip):
    """Half size, then the flip, computed here independently of mmrotate."""
    b = boxes.clone()
    b[:, :4] *= 0.5
    w, h = 32, 24
    if flip == 'horizontal':
        b[:, 0] = w - b[:, 0]
        b[:, 4] = -b[:, 4]
    elif flip == 'vertical':
        b[:, 1] = h - b[:, 1]
        b[:, 4] = -b[:, 4]
    return b


def same_rbox(a, b):
    """Equal rotated boxes up to the angle's period (pi) and w/h swap."""
    from bhcl.structures.geometry import rbox_to_poly
    pa = np.asarray(rbox_to_poly(a.numpy()[None]))[0].reshape(4, 2)
    pb = np.asarray(rbox_to_poly(b.numpy()[None]))[0].reshape(4, 2)
    return all(np.min(np.abs(pb - p).sum(1)) < 1e-3 for p in pa)


@pytest.mark.parametrize('flip', ['horizontal', 'vertical'])
def test_embeddings_follow_their_boxes_through_resize_flip_and_filter(tmp_path, flip):
    ds = dataset(write_data(tmp_path), pipeline(flip=flip))
    assert len(ds) == 2 and ds.metainfo['classes'][0] == 'cluster_000'
    for i in range(2):
        out = ds[i]
        gt = out['data_samples'].gt_instances
        n = len(BOXES) - i
        # the 3 x 2 px box is 1.5 x 1 px after resizing: dropped with its embedding
        kept = [j for j in range(n) if j != 2]
        assert len(gt) == len(kept) == len(gt.embeddings)
        assert gt.embeddings[:, 0].tolist() == kept
        assert gt.embeddings[:, 1].tolist() == [i] * len(kept)
        assert gt.labels.tolist() == [j % K for j in kept]
        want = expected_after(BOXES[kept], flip)
        got = gt.bboxes.tensor
        assert all(same_rbox(g, w) for g, w in zip(got, want))
        assert out['data_samples'].metainfo['img_shape'] == (24, 32)


def test_images_without_pseudo_labels_are_counted_and_left_out(tmp_path):
    ds = dataset(write_data(tmp_path, n_images=3, missing_pseudo=True))
    assert len(ds) == 2
    assert ds.load_stats['skipped_no_pseudo_labels'] == 1


def test_labels_beyond_num_classes_name_the_file(tmp_path):
    root = write_data(tmp_path)
    data = torch.load(root / 'pseudo' / 'img0.pth')
    data['labels'][0] = K + 3
    torch.save(data, root / 'pseudo' / 'img0.pth')
    ds = dataset(root)
    with pytest.raises(ValueError, match=r'img0\.pth.*num_pseudo_classes=8'):
        ds[0]


def test_inconsistent_rows_name_the_file(tmp_path):
    root = write_data(tmp_path)
    data = torch.load(root / 'pseudo' / 'img1.pth')
    data['embeddings'] = data['embeddings'][:-1]
    torch.save(data, root / 'pseudo' / 'img1.pth')
    with pytest.raises(ValueError, match=r'img1\.pth: inconsistent'):
        dataset(root)[1]


@TRANSFORMS.register_module(force=True)
class _DropFirstBoxOnly:
    """A transform that removes a box but not its embedding (what the check catches)."""

    def __call__(self, results):
        for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags'):
            results[key] = results[key][1:]
        return results


def test_packing_refuses_boxes_and_embeddings_out_of_step(tmp_path):
    pipe = pipeline()
    pipe.insert(2, dict(type='_DropFirstBoxOnly'))
    ds = dataset(write_data(tmp_path), pipe)
    with pytest.raises(ValueError, match='removed boxes without their embeddings'):
        ds[0]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='pseudo_path'):
        init_default_scope('mmrotate')
        DATASETS.build(dict(type='PseudoLabelDataset', num_classes=K, data_root=str(tmp_path),
                            data_prefix=dict(img_path='', pseudo_path='nope'), pipeline=[]))


def test_no_angle_wrap_surprise():
    # the flip expectations above assume le90 angles well inside (-pi/2, pi/2)
    assert BOXES[:, 4].abs().max() < math.pi / 2


def test_corrupt_image_names_the_file_and_its_pseudo_label_file(tmp_path):
    root = write_data(tmp_path)
    (root / 'images' / 'img0.png').write_bytes(b'')
    with pytest.raises(OSError) as info:
        dataset(root)[0]
    assert str(info.value) == (
        f'{root}/images/img0.png: cannot read the image: the file is empty (0 bytes); restore '
        'it, or delete it and its pseudo-label file from the dataset')
