import pytest
import torch

from bhcl.pretraining import (ClusterModel, assign_embedding_files, collect_embeddings,
                              fit_cluster_model)
from bhcl.pretraining import clustering as clustering_module


def blobs(n_per=20, dim=64, centres=3, seed=0):
    """(n_per * centres, dim) embeddings around ``centres`` random means, and blob ids."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centres, dim, generator=g) * 5
    x = means.repeat_interleave(n_per, 0) + 0.3 * torch.randn(n_per * centres, dim, generator=g)
    return x, torch.arange(centres).repeat_interleave(n_per)


def write_embedding_dir(folder, x, per_file=7):
    folder.mkdir()
    for i, start in enumerate(range(0, len(x), per_file)):
        emb = x[start:start + per_file]
        boxes = torch.arange(len(emb) * 5, dtype=torch.float32).reshape(-1, 5) + start * 5
        torch.save(dict(image=f'{i}.png', boxes=boxes, embeddings=emb), folder / f'{i:03d}.pth')


def test_clusters_recover_blobs_and_round_trip(tmp_path):
    x, blob = blobs()
    model = fit_cluster_model(x, dim=8, num_clusters=3, seed=0)
    labels, z = model.assign(x)
    assert z.shape == (60, 8) and labels.dtype == torch.long
    torch.testing.assert_close(z.norm(dim=1), torch.ones(60))
    torch.testing.assert_close(model.centroids.norm(dim=1), torch.ones(3))
    # one label per blob, a different one for each blob
    assert all(len(labels[blob == b].unique()) == 1 for b in range(3))
    assert len(labels.unique()) == 3
    model.save(str(tmp_path / 'clusters.pth'))
    loaded = ClusterModel.load(str(tmp_path / 'clusters.pth'))
    torch.testing.assert_close(loaded.assign(x)[0], labels, rtol=0, atol=0)
    assert loaded.meta['dim'] == 8 and loaded.meta['num_clusters'] == 3


def test_projection_is_the_pca_of_the_centred_data():
    x, _ = blobs(seed=1)
    model = fit_cluster_model(x, dim=5, num_clusters=3)
    torch.testing.assert_close(model.mean, x.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.components @ model.components.T, torch.eye(5),
                               atol=1e-4, rtol=0)
    # the first axis is the top right-singular vector of the centred data (up to sign)
    top = torch.linalg.svd((x - x.mean(0)).double(), full_matrices=False)[2][0].float()
    assert abs(float(model.components[0] @ top)) == pytest.approx(1, abs=1e-4)


def test_cosine_assignment_matches_a_brute_force_loop():
    x, _ = blobs(centres=6, seed=2)
    model = fit_cluster_model(x + 3 * torch.randn_like(x), dim=6, num_clusters=5, seed=3)
    labels, _ = model.assign(x)
    centred = (x.double() - model.mean.double()) @ model.components.double().T
    for row, label in zip(centred.tolist(), labels.tolist()):
        best, best_cos = None, -2.0
        for k, c in enumerate(model.centroids.double().tolist()):
            cos = sum(a * b for a, b in zip(row, c)) / (
                sum(a * a for a in row) ** 0.5 * sum(b * b for b in c) ** 0.5)
            if cos > best_cos:
                best, best_cos = k, cos
        assert label == best


def test_sizes_are_clipped_with_a_warning(record_log):
    logged = record_log(clustering_module, '_log')
    x, _ = blobs(n_per=4, dim=16, centres=3)
    x[1] = x[0]   # 11 distinct samples
    model = fit_cluster_model(x, dim=256, num_clusters=256)
    assert model.meta['dim'] == 12 and model.meta['requested_dim'] == 256
    assert model.num_clusters == 11 and model.meta['requested_num_clusters'] == 256
    assert len(logged) == 2 and '256 requested' in logged[0] and '11 distinct' in logged[1]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='N > 0'):
        fit_cluster_model(torch.zeros(0, 8))
    model = fit_cluster_model(blobs()[0], dim=4, num_clusters=2)
    with pytest.raises(ValueError, match=r'\(N, 64\) embeddings'):
        model.assign(torch.zeros(3, 32))


def test_saved_clusters_label_a_second_dataset_the_same_way(tmp_path):
    x, _ = blobs(seed=4)
    write_embedding_dir(tmp_path / 'a', x[:35])
    write_embedding_dir(tmp_path / 'b', x[35:])
    fitted = collect_embeddings([str(tmp_path / 'a'), str(tmp_path / 'b')])
    torch.testing.assert_close(fitted, x)
    model = fit_cluster_model(fitted, dim=8, num_clusters=3)
    model.save(str(tmp_path / 'clusters.pth'))
    expected, z = model.assign(x)
    for name, rows in (('b', slice(35, None)), ('a', slice(None, 35))):
        stats = assign_embedding_files(ClusterModel.load(str(tmp_path / 'clusters.pth')),
                                       str(tmp_path / name), str(tmp_path / f'{name}_labels'))
        files = sorted((tmp_path / f'{name}_labels').iterdir())
        assert stats['images'] == len(files) and stats['boxes'] == len(x[rows])
        out = [torch.load(f, weights_only=True) for f in files]
        torch.testing.assert_close(torch.cat([o['labels'] for o in out]), expected[rows])
        torch.testing.assert_close(torch.cat([o['embeddings'] for o in out]), z[rows])
        src = [torch.load(tmp_path / name / f.name, weights_only=True) for f in files]
        for o, s in zip(out, src):   # boxes and labels stay aligned, in the input's order
            assert o['image'] == s['image'] and torch.equal(o['boxes'], s['boxes'])


def test_max_per_image_subsamples_each_file(tmp_path):
    x, _ = blobs()
    write_embedding_dir(tmp_path / 'a', x)
    sub = collect_embeddings([str(tmp_path / 'a')], max_per_image=3, seed=0)
    assert len(sub) == 3 * 8 + 3   # 8 files of 7 and one of 4 objects
    assert all((row == x).all(1).any() for row in sub)


def test_embedding_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='extract_embeddings.py'):
        collect_embeddings([str(tmp_path / 'missing')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no embedding files'):
        collect_embeddings([str(tmp_path / 'empty')])
    (tmp_path / 'bad').mkdir()
    torch.save(dict(boxes=torch.zeros(2, 5), embeddings=torch.zeros(3, 8)),
               tmp_path / 'bad' / 'x.pth')
    with pytest.raises(ValueError, match=r'x\.pth: 2 boxes but 3 embeddings'):
        collect_embeddings([str(tmp_path / 'bad')])
    with pytest.raises(FileNotFoundError, match='--fit'):
        ClusterModel.load(str(tmp_path / 'none.pth'))
