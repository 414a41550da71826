import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bhcl.pretraining import (build_frozen_backbone, crop_rotated, embed_boxes,
                              extract_embedding_files, image_to_tensor, write_proposals)
from bhcl.pretraining import embeddings as embeddings_module

from .helpers import DRAWN_BOXES, draw_boxes, write_image_folder

R18 = dict(type='mmdet.ResNet', depth=18, out_indices=(3,), norm_eval=True, init_cfg=None)


@pytest.fixture(scope='module')
def r18():
    torch.manual_seed(0)
    return build_frozen_backbone(R18)


def random_image(seed=0, shape=(3, 64, 80)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_zero_angle_crop_equals_plain_crop_and_resize():
    img = random_image()
    x0, y0, w, h = 8, 12, 48, 32
    box = torch.tensor([[x0 + w / 2, y0 + h / 2, w, h, 0.0]])
    crop = crop_rotated(img, box, out_size=16)
    ref = F.interpolate(img[None, :, y0:y0 + h, x0:x0 + w], size=(16, 16), mode='bilinear',
                        align_corners=False)
    torch.testing.assert_close(crop, ref, atol=1e-5, rtol=0)


def test_scale_enlarges_about_the_centre():
    img = random_image(1)
    box = torch.tensor([[40.0, 30.0, 20.0, 12.0, 0.6]])
    big = box.clone()
    big[:, 2:4] *= 1.5
    torch.testing.assert_close(crop_rotated(img, box, 12, scale=1.5),
                               crop_rotated(img, big, 12), atol=1e-5, rtol=0)


@pytest.mark.parametrize('angle,k', [(math.pi / 2, 1), (-math.pi / 2, -1)])
def test_quarter_turn_crop_equals_rot90_of_the_axis_aligned_crop(angle, k):
    img = random_image(2)
    rotated = crop_rotated(img, torch.tensor([[40.0, 32.0, 40.0, 24.0, angle]]), out_size=20)
    upright = crop_rotated(img, torch.tensor([[40.0, 32.0, 24.0, 40.0, 0.0]]), out_size=20)
    torch.testing.assert_close(rotated, torch.rot90(upright, k, dims=(-2, -1)),
                               atol=1e-4, rtol=0)


def test_crop_follows_the_drawn_rotated_rectangle():
    img = torch.from_numpy(draw_boxes()[:, :, 0].astype(np.float32))[None]
    boxes = torch.from_numpy(DRAWN_BOXES).float()
    inner = crop_rotated(img, boxes, out_size=16, scale=0.8)
    assert (inner > 150).all()   # all inside the bright polygons
    outer = crop_rotated(img, boxes, out_size=16, scale=1.6)
    assert (outer[..., 0, :] < 40).all() and (outer[..., :, 0] < 40).all()   # dark border


def test_crop_is_batched_and_leaves_the_image_unchanged():
    img = random_image(3)
    before = img.clone()
    boxes = torch.tensor([[20.0, 20.0, 10.0, 6.0, 0.3], [50.0, 40.0, 16.0, 9.0, -1.0],
                          [70.0, 10.0, 30.0, 8.0, 1.4]])
    batch = crop_rotated(img, boxes, out_size=8, scale=1.5)
    assert batch.shape == (3, 3, 8, 8)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], crop_rotated(img, boxes[i:i + 1], 8, 1.5))
    torch.testing.assert_close(img, before, rtol=0, atol=0)


def test_image_to_tensor_normalises_rgb():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255   # blue in BGR
    x = image_to_tensor(img)
    assert x.shape == (3, 2, 3)
    torch.testing.assert_close(x[2], torch.full((2, 3), (255 - 103.53) / 57.375))
    torch.testing.assert_close(x[0], torch.full((2, 3), -123.675 / 58.395))


def test_backbone_is_frozen(r18):
    assert not r18.training and all(not p.requires_grad for p in r18.parameters())
    emb = embed_boxes(r18, draw_boxes(), DRAWN_BOXES, out_size=32, device='cpu')
    assert emb.shape == (4, 512) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    assert embed_boxes(r18, draw_boxes(), np.zeros((0, 5)), out_size=32).shape == (0, 512)


def test_embeddings_do_not_depend_on_the_batch(r18):
    img = draw_boxes()
    together = embed_boxes(r18, img, DRAWN_BOXES, out_size=32, batch_size=3)
    alone = torch.cat([embed_boxes(r18, img, b[None], out_size=32) for b in DRAWN_BOXES])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_checkpoint_loading(tmp_path, r18):
    detector = {'state_dict': {**{'backbone.' + k: v for k, v in r18.state_dict().items()},
                               'neck.conv.weight': torch.zeros(1)}}
    torch.save(detector, tmp_path / 'det.pth')
    torch.manual_seed(1)
    loaded = build_frozen_backbone(R18, checkpoint=str(tmp_path / 'det.pth'))
    for k, v in r18.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    torch.save({'conv1.weight': r18.conv1.weight}, tmp_path / 'part.pth')
    with pytest.raises(ValueError, match=r'part\.pth: .* weights missing'):
        build_frozen_backbone(R18, checkpoint=str(tmp_path / 'part.pth'))
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match=r'other\.pth: does not fit'):
        build_frozen_backbone(R18, checkpoint=str(tmp_path / 'other.pth'))


def test_filtered_boxes_and_embeddings_stay_aligned(tmp_path, r18, monkeypatch):
    monkeypatch.setattr(embeddings_module, '_log', lambda *a, **k: None)
    img_dir, prop_dir, out_dir = tmp_path / 'images', tmp_path / 'proposals', tmp_path / 'emb'
    img_dir.mkdir()
    drawn = write_image_folder(img_dir, num=1)['img_0']
    outside = np.array([[500.0, 30.0, 20.0, 10.0, 0.0]])
    degenerate = np.array([[60.0, 60.0, 20.0, 0.0, 0.0]])
    # degenerate and outside boxes between valid ones: the survivors keep their order
    proposals = np.concatenate([drawn[:1], degenerate, drawn[1:3], outside, drawn[3:]])
    write_proposals(str(prop_dir / 'img_0.txt'), proposals)
    stats = extract_embedding_files(str(img_dir), str(prop_dir), str(out_dir), r18,
                                    out_size=32, batch_size=3)
    assert stats == {'images': 1, 'boxes': 4, 'degenerate_boxes': 1, 'boxes_outside_image': 1}
    saved = torch.load(out_dir / 'img_0.pth', weights_only=True)
    assert saved['image'] == 'img_0.png'
    torch.testing.assert_close(saved['boxes'], torch.from_numpy(drawn).float(), atol=0.02,
                               rtol=0)
    import cv2
    img = cv2.imread(str(img_dir / 'img_0.png'))
    for box, emb in zip(saved['boxes'].numpy(), saved['embeddings']):
        torch.testing.assert_close(emb, embed_boxes(r18, img, box[None], out_size=32)[0],
                                   atol=1e-4, rtol=1e-4)


def test_images_left_without_boxes_are_counted(tmp_path, r18, record_log):
    logged = record_log(embeddings_module, '_log')
    img_dir, prop_dir, out_dir = tmp_path / 'images', tmp_path / 'proposals', tmp_path / 'emb'
    img_dir.mkdir()
    write_image_folder(img_dir, num=2)
    write_proposals(str(prop_dir / 'img_0.txt'), DRAWN_BOXES)
    (prop_dir / 'img_1.txt').write_text('')
    stats = extract_embedding_files(str(img_dir), str(prop_dir), str(out_dir), r18,
                                    out_size=32, dtype=torch.float16)
    assert stats['images'] == 1 and stats['images_without_proposals'] == 1
    assert [p.name for p in out_dir.iterdir()] == ['img_0.pth']
    assert torch.load(out_dir / 'img_0.pth')['embeddings'].dtype == torch.float16
    assert any('img_1.txt' in m for m in logged)


def test_missing_image_names_the_proposal_file(tmp_path, r18):
    img_dir, prop_dir = tmp_path / 'images', tmp_path / 'proposals'
    img_dir.mkdir()
    write_image_folder(img_dir, num=1)
    write_proposals(str(prop_dir / 'img_9.txt'), DRAWN_BOXES)
    with pytest.raises(FileNotFoundError, match=r'img_9\.txt: no image named img_9\.\*'):
        extract_embedding_files(str(img_dir), str(prop_dir), str(tmp_path / 'emb'), r18)
    with pytest.raises(ValueError, match='no proposal files'):
        extract_embedding_files(str(img_dir), str(img_dir), str(tmp_path / 'emb'), r18)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_embeddings_match_cpu(r18):
    img = draw_boxes()
    cpu = embed_boxes(r18, img, DRAWN_BOXES, out_size=32)
    gpu = embed_boxes(r18.cuda(), img, DRAWN_BOXES, out_size=32, device='cuda')
    r18.cpu()
    assert gpu.device.type == 'cpu'
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_corrupt_image_message_names_its_proposal_file(tmp_path, r18):
    img_dir, prop_dir = tmp_path / 'images', tmp_path / 'proposals'
    img_dir.mkdir()
    write_image_folder(img_dir, num=1)
    (img_dir / 'img_0.png').write_bytes(b'GIF89a, truncated')
    write_proposals(str(prop_dir / 'img_0.txt'), DRAWN_BOXES)
    with pytest.raises(OSError) as info:
        extract_embedding_files(str(img_dir), str(prop_dir), str(tmp_path / 'emb'), r18)
    assert str(info.value) == (
        f'{img_dir}/img_0.png: cannot read the image: the file is not an image OpenCV can '
        'decode (17 bytes: truncated, corrupt or another format under an image suffix); '
        f'restore it, or delete its proposal file {prop_dir}/img_0.txt to leave the image out')
