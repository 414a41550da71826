"""The three command-line tools, end to end on a folder of three images."""
import os.path as osp
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

from .helpers import write_image_folder

sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'pretraining'))


def test_pseudo_label_tools_end_to_end(tmp_path, capsys):
    import cluster_embeddings
    import extract_embeddings
    import generate_proposals
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    write_image_folder(img_dir, num=3)
    props, emb, labels = (str(tmp_path / n) for n in ('proposals', 'emb', 'labels'))

    stats = generate_proposals.main([str(img_dir), props, '--max-num', '10'])
    assert stats['images'] == 3 and 12 <= stats['boxes'] <= 30

    random_r18 = ['--depth', '18', '--checkpoint', 'none', '--out-size', '32']
    stats = extract_embeddings.main([str(img_dir), props, emb, *random_r18, '--batch-size', '8'])
    assert stats['images'] == 3 and stats['boxes'] > 0
    first_emb = torch.load(osp.join(emb, 'img_0.pth'))['embeddings']
    assert first_emb.shape[1] == 512
    # random weights come from --seed, not from the caller's random state
    torch.manual_seed(123)
    extract_embeddings.main([str(img_dir), props, str(tmp_path / 'emb_again'), *random_r18])
    assert torch.equal(torch.load(tmp_path / 'emb_again' / 'img_0.pth')['embeddings'], first_emb)
    extract_embeddings.main([str(img_dir), props, str(tmp_path / 'emb_seed1'), *random_r18,
                             '--seed', '1'])
    assert not torch.allclose(torch.load(tmp_path / 'emb_seed1' / 'img_0.pth')['embeddings'],
                              first_emb)
    # the same backbone from a config file gives the same embeddings
    cfg = tmp_path / 'r18.py'
    cfg.write_text("backbone = dict(type='mmdet.ResNet', depth=18, out_indices=(3,), "
                   "init_cfg=None)\n")
    extract_embeddings.main([str(img_dir), props, str(tmp_path / 'emb_cfg'), '--backbone-config',
                             str(cfg), '--out-size', '32', '--half'])
    torch.testing.assert_close(torch.load(tmp_path / 'emb_cfg' / 'img_0.pth')['embeddings'],
                               first_emb.half(), atol=1e-2, rtol=1e-2)

    model = str(tmp_path / 'clusters.pth')
    argv = [emb, labels, '--model', model, '--dim', '8', '--num-clusters', '4']
    capsys.readouterr()
    stats = cluster_embeddings.main(argv + ['--fit'])
    assert stats['images'] == 3 and 1 <= stats['clusters_used'] <= 4
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{labels}: boxes={stats['boxes']}, clusters_used={stats['clusters_used']} (of 4), "
        'images=3')
    first = torch.load(osp.join(labels, 'img_1.pth'))
    assert first['labels'].shape == (len(first['boxes']),)
    assert first['embeddings'].shape == (len(first['boxes']), 8)

    again = str(tmp_path / 'labels_again')
    cluster_embeddings.main([emb, again, '--model', model])   # reuse the saved clusters
    torch.testing.assert_close(torch.load(osp.join(again, 'img_1.pth'))['labels'],
                               first['labels'])
    with pytest.raises(FileExistsError, match='--overwrite'):
        cluster_embeddings.main(argv + ['--fit'])


def test_generate_proposals_measures_recall_against_labels(tmp_path, capsys):
    import generate_proposals
    from bhcl.structures.geometry import rbox_to_poly
    img_dir, gt_dir = tmp_path / 'images', tmp_path / 'labelTxt'
    img_dir.mkdir()
    gt_dir.mkdir()
    for stem, boxes in write_image_folder(img_dir, num=2).items():
        (gt_dir / f'{stem}.txt').write_text(''.join(
            ' '.join(f'{v:.2f}' for v in poly.ravel()) + ' Sedan 0\n'
            for poly in rbox_to_poly(boxes)))
    props = str(tmp_path / 'proposals')
    stats = generate_proposals.main([str(img_dir), props, '--gt-dir', str(gt_dir)])
    # every drawn rectangle is found (IoU > 0.9, test_proposals.py)
    assert stats['images'] == 2 and stats['objects'] == 8 and stats['recall@0.7'] == 1.0
    assert 'recall@0.5=1.000' in capsys.readouterr().out
    # measuring only: proposals from elsewhere (here: one image's file emptied)
    open(osp.join(props, 'img_1.txt'), 'w').close()
    stats = generate_proposals.main([str(img_dir), props, '--gt-dir', str(gt_dir),
                                     '--no-generate'])
    assert 'boxes' not in stats and stats['recall@0.5'] == 0.5
    with pytest.raises(SystemExit):
        generate_proposals.main([str(img_dir), props, '--no-generate'])
    assert 'give --gt-dir' in capsys.readouterr().err
