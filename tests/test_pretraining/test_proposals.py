import math

import numpy as np
import pytest
import torch

from bhcl.datasets.dota_txt import AnnotationError
from bhcl.ops import rotated_box_iou
from bhcl.pretraining import (ProposalConfig, generate_proposal_files, generate_proposals,
                              list_images, min_area_rbox, proposal_recall, read_proposals,
                              write_proposals)
from bhcl.pretraining import proposals as proposals_module
from bhcl.structures.geometry import rbox_to_poly

from .helpers import DRAWN_BOXES, draw_boxes, write_image_folder


def best_iou(found, drawn):
    """(M,) best IoU of each drawn box with any found box."""
    iou = rotated_box_iou(torch.as_tensor(drawn, dtype=torch.float64),
                          torch.as_tensor(found, dtype=torch.float64))
    return iou.max(1).values


def assert_le90(boxes):
    assert (boxes[:, 2] >= boxes[:, 3]).all()
    assert ((boxes[:, 4] >= -math.pi / 2) & (boxes[:, 4] < math.pi / 2)).all()


@pytest.mark.parametrize('methods', [('mser',), ('threshold',), ('mser', 'threshold')])
def test_generator_finds_the_drawn_rotated_rectangles(methods):
    img = draw_boxes()
    boxes, scores = generate_proposals(img, ProposalConfig(methods=methods))
    assert boxes.dtype == np.float32 and boxes.shape[1] == 5 and len(boxes) == len(scores)
    assert_le90(boxes)
    assert (np.diff(scores) <= 0).all()   # best first
    assert (best_iou(boxes, DRAWN_BOXES) > 0.9).all()


def test_generator_filters_size_aspect_and_count():
    img = draw_boxes()
    small = generate_proposals(img, ProposalConfig(min_size=25))[0]
    assert (small[:, 3] >= 25).all()
    # only the 30 x 24 box has both sides >= 20 and aspect <= 1.5
    boxy = generate_proposals(img, ProposalConfig(min_size=20, max_aspect=1.5))[0]
    assert (best_iou(boxy, DRAWN_BOXES[3:]) > 0.9).all()
    assert (boxy[:, 2] <= 1.5 * boxy[:, 3]).all()
    assert len(generate_proposals(img, ProposalConfig(max_num=2))[0]) == 2
    # no box as large as the image: the background is not an object
    assert (generate_proposals(img)[0][:, 2] <= 0.8 * 160).all()


def test_nms_removes_duplicates():
    img = draw_boxes()
    without = generate_proposals(img, ProposalConfig(nms_iou=None))[0]
    with_nms = generate_proposals(img, ProposalConfig(nms_iou=0.5))[0]
    assert len(with_nms) < len(without)
    iou = rotated_box_iou(torch.from_numpy(with_nms), torch.from_numpy(with_nms))
    assert (iou.fill_diagonal_(0) < 0.5 + 1e-4).all()


def test_min_area_rbox_matches_the_polygon():
    box = np.array([50.0, 40.0, 30.0, 10.0, 0.4])
    fitted = min_area_rbox(rbox_to_poly(box[None]).reshape(4, 2))
    np.testing.assert_allclose(fitted, box, atol=1e-4)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match='methods'):
        ProposalConfig(methods=('sam',))


def test_dota_txt_round_trip(tmp_path):
    boxes = DRAWN_BOXES.astype(np.float32)
    path = tmp_path / 'a.txt'
    write_proposals(str(path), boxes, class_name='object')
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(line.endswith(' object 0') for line in lines)
    read, dropped = read_proposals(str(path))
    assert dropped == 0
    np.testing.assert_allclose(read, boxes, atol=0.02)


def test_read_proposals_accepts_headers_and_any_class_name(tmp_path):
    path = tmp_path / 'p.txt'
    path.write_text('imagesource:GoogleEarth\ngsd:0.5\n'
                    '10 10 30 10 30 20 10 20 small vehicle 1\n'
                    '0 0 6 0 6 4 0 4 Boeing 737\n')
    boxes, dropped = read_proposals(str(path))
    np.testing.assert_allclose(boxes, [[20, 15, 20, 10, 0], [3, 2, 6, 4, 0]],
                               atol=1e-5)
    assert dropped == 0


def test_read_proposals_counts_degenerate_boxes(tmp_path, record_log):
    logged = record_log(proposals_module, '_log')
    path = tmp_path / 'p.txt'
    path.write_text('10 10 30 10 30 20 10 20 object 0\n5 5 9 5 9 5 5 5 object 0\n')
    boxes, dropped = read_proposals(str(path))
    assert len(boxes) == 1 and dropped == 1
    assert 'line(s) 2' in logged[0] and str(path) in logged[0]


def test_malformed_proposal_line_names_file_and_line(tmp_path):
    path = tmp_path / 'bad.txt'
    path.write_text('10 10 30 10 30 20 10 20 object 0\n10 10 30 x 30 20 10 20 object\n')
    with pytest.raises(AnnotationError, match=r'bad\.txt:2: .*Fix or delete this line'):
        read_proposals(str(path))


def test_generate_proposal_files_counts_images_without_proposals(tmp_path, record_log):
    import cv2
    logged = record_log(proposals_module, '_log')
    img_dir, out_dir = tmp_path / 'images', tmp_path / 'proposals'
    img_dir.mkdir()
    write_image_folder(img_dir, num=2)
    cv2.imwrite(str(img_dir / 'blank.png'), np.full((64, 64, 3), 30, np.uint8))
    (img_dir / 'notes.md').write_text('not an image')
    stats = generate_proposal_files(str(img_dir), str(out_dir))
    assert stats['images'] == 3 and stats['images_without_proposals'] == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ['blank.txt', 'img_0.txt', 'img_1.txt']
    assert (out_dir / 'blank.txt').read_text() == ''
    assert stats['boxes'] == sum(len(read_proposals(str(p))[0]) for p in out_dir.iterdir())
    assert any('blank.png' in m for m in logged)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        list_images(str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match='no images'):
        list_images(str(tmp_path))
    (tmp_path / 'a.png').write_bytes(b'')
    (tmp_path / 'a.jpg').write_bytes(b'')
    with pytest.raises(ValueError, match="image 'a'"):
        list_images(str(tmp_path))


def test_corrupt_image_message_fits_the_proposal_tool(tmp_path):
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    write_image_folder(img_dir, num=1)
    (img_dir / 'img_0.png').write_bytes(b'')
    with pytest.raises(OSError) as info:
        generate_proposal_files(str(img_dir), str(tmp_path / 'proposals'))
    assert str(info.value) == (
        f'{img_dir}/img_0.png: cannot read the image: the file is empty (0 bytes); restore it, '
        'or move it out of the image folder (every image there gets a proposal file)')


def test_proposal_recall_equals_a_shapely_loop(tmp_path):
    """Recall and median best IoU against ground truth with a non-rectangular
    quadrilateral, an image without proposals and one without objects."""
    from shapely.geometry import Polygon
    gt_dir, prop_dir = tmp_path / 'labelTxt', tmp_path / 'proposals'
    gt_dir.mkdir()
    gts = {'a': [[10, 10, 50, 12, 48, 30, 12, 28], [60, 60, 90, 60, 90, 80, 60, 80]],
           'b': [[5, 5, 25, 5, 25, 15, 5, 15]],
           'c': []}
    props = {'a': np.array([[30.0, 20.0, 38.0, 18.0, 0.05], [75.0, 72.0, 30.0, 20.0, 0.0],
                            [120.0, 120.0, 10.0, 10.0, 0.0]]),
             'b': np.zeros((0, 5)),
             'c': np.array([[40.0, 40.0, 10.0, 6.0, 0.3]])}
    for stem in gts:
        (gt_dir / f'{stem}.txt').write_text('imagesource:test\ngsd:0.5\n' + ''.join(
            ' '.join(map(str, poly)) + ' Sedan 0\n' for poly in gts[stem]))
        write_proposals(str(prop_dir / f'{stem}.txt'), props[stem])
    best = []
    for stem in gts:
        found = [Polygon(np.reshape(p, (4, 2)))
                 for p in rbox_to_poly(read_proposals(str(prop_dir / f'{stem}.txt'))[0])]
        for poly in gts[stem]:
            g = Polygon(np.reshape(poly, (4, 2)))
            best.append(max([g.intersection(f).area / g.union(f).area for f in found],
                            default=0.0))
    out = proposal_recall(str(prop_dir), str(gt_dir), iou_thrs=(0.5, 0.7, 0.95))
    assert (out['images'], out['objects'], out['proposals']) == (3, 3, 4)
    for thr in (0.5, 0.7, 0.95):
        assert out[f'recall@{thr:g}'] == pytest.approx(np.mean(np.array(best) >= thr))
    assert out['median_best_iou'] == pytest.approx(np.median(best), abs=1e-9)
    assert 0 < out['recall@0.5'] < 1   # the case is not trivial
    (prop_dir / 'b.txt').unlink()
    with pytest.raises(FileNotFoundError, match='b.txt: no proposal file for .*every image'):
        proposal_recall(str(prop_dir), str(gt_dir))
    with pytest.raises(FileNotFoundError, match='no DOTA .txt annotation'):
        proposal_recall(str(prop_dir), str(tmp_path))
