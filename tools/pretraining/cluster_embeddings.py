"""Pseudo-classes of object embeddings: PCA + L2 + k-means, then per-image labels.

    # fit on one or more datasets and label the first:
    python tools/pretraining/cluster_embeddings.py EMB_DIR OUT_DIR --model clusters.pth
        --fit [--fit-dirs EMB_DIR2 ...] [--dim 256] [--num-clusters 256]
        [--max-per-image N] [--seed 0] [--overwrite]
    # label another dataset with the same cluster ids:
    python tools/pretraining/cluster_embeddings.py EMB_DIR2 OUT_DIR2 --model clusters.pth

EMB_DIR holds <stem>.pth files from extract_embeddings.py. With --fit, the
PCA (to --dim) and k-means (--num-clusters, clipped with a warning when there
are fewer distinct samples) are fitted on EMB_DIR plus --fit-dirs and saved
to --model (one file: PCA mean and components, centroids). Without --fit,
--model is loaded. Every object of EMB_DIR is labelled with its nearest
centroid by cosine: OUT_DIR/<stem>.pth = dict(image, boxes (N, 5), labels (N,),
embeddings (N, dim), L2-normalised PCA projections), rows aligned.
"""
import argparse
import os.path as osp
import sys

from mmengine.utils import ProgressBar

from bhcl.pretraining import (ClusterModel, assign_embedding_files, collect_embeddings,
                              fit_cluster_model, list_embedding_files)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('emb_dir', help='folder of <stem>.pth embedding files to label')
    parser.add_argument('out_dir', help='folder for the <stem>.pth pseudo-label files')
    parser.add_argument('--model', required=True, help='cluster file to write (--fit) or read')
    parser.add_argument('--fit', action='store_true', help='fit the clusters and save --model')
    parser.add_argument('--fit-dirs', nargs='*', default=[],
                        help='more embedding folders to fit on (with --fit)')
    parser.add_argument('--dim', type=int, default=256, help='PCA dimension (%(default)s)')
    parser.add_argument('--num-clusters', type=int, default=256, help='k (%(default)s)')
    parser.add_argument('--max-per-image', type=int, default=None,
                        help='fit on at most N random objects per image (bounds memory)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --model')
    return parser.parse_args(argv)


def fit(args) -> ClusterModel:
    if osp.exists(args.model) and not args.overwrite:
        raise FileExistsError(f'{args.model} exists; pass --overwrite to refit it, or drop '
                              '--fit to label with it')
    dirs = [args.emb_dir] + list(args.fit_dirs)
    bar = ProgressBar(sum(len(list_embedding_files(d)) for d in dirs), file=sys.stdout)
    embeddings = collect_embeddings(dirs, args.max_per_image, args.seed, progress=bar.update)
    print(f'\nfitting PCA + k-means on {len(embeddings)} objects of {embeddings.shape[1]}-d')
    model = fit_cluster_model(embeddings, args.dim, args.num_clusters, args.seed)
    model.save(args.model)
    print(f'{args.model}: dim={model.meta["dim"]}, num_clusters={model.num_clusters}')
    return model


def summary_line(stats: dict, num_clusters: int) -> str:
    """``boxes=.., clusters_used=U (of k), images=..``: the counts, with k
    next to the number of clusters used."""
    return ', '.join(f'{k}={v}' + (f' (of {num_clusters})' if k == 'clusters_used' else '')
                     for k, v in sorted(stats.items()))


def main(argv=None):
    args = parse_args(argv)
    if args.fit_dirs and not args.fit:
        raise ValueError('--fit-dirs needs --fit')
    model = fit(args) if args.fit else ClusterModel.load(args.model)
    bar = ProgressBar(len(list_embedding_files(args.emb_dir)), file=sys.stdout)
    stats = assign_embedding_files(model, args.emb_dir, args.out_dir, progress=bar.update)
    print(f'\n{args.out_dir}: ' + summary_line(stats, model.num_clusters))
    return stats


if __name__ == '__main__':
    main()
