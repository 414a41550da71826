"""Scene inference speed and peak memory on the CPU, for growing scene sizes.

Writes tiled GeoTIFF scenes of ``--sizes`` px squared (a textured 1024 px tile with
rotated objects, repeated; never held whole in memory), then runs
``bhcl.apis.infer_scene`` on each with the synthetic smoke model
(``configs/synthetic/orientedformer_r18_1xb4-12e_synthetic.py``, seeded random
weights) in a fresh process, so that each size's peak resident memory
(``ru_maxrss``) is its own. Prints windows, windows per second, detections,
CPU seconds per window (user + system: on a shared machine, wall time also counts
the time other processes hold the CPU), peak RSS and peak RSS above the
process's RSS once the model is loaded and has run one window. Targets: peak memory grows at most 1.5x from the smallest to the
largest scene, and time grows linearly with the number of windows (windows/s
flat).

    python benchmarks/scene_speed.py [--sizes 4000 10000 20000] [--patch-size 1024]
        [--patch-overlap 200] [--batch-size 4] [--score-thr 0.05] [--threads 1]

The smoke model's test pipeline resizes each window to 256 px, so a 1024 px
window costs one 256 px forward pass plus the read and the resize.
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'synthetic', 'orientedformer_r18_1xb4-12e_synthetic.py')
TILE = 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[4000, 10000, 20000])
    parser.add_argument('--patch-size', type=int, default=1024)
    parser.add_argument('--patch-overlap', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--score-thr', type=float, default=0.05)
    parser.add_argument('--threads', type=int, default=1, help='torch / OpenMP threads')
    parser.add_argument('--tmp-dir', default=None, help='where the scenes are written')
    parser.add_argument('--worker', help=argparse.SUPPRESS)   # run one scene, print JSON
    return parser.parse_args(argv)


def tile_image(seed: int = 0) -> np.ndarray:
    """(3, TILE, TILE) uint8 RGB: noise, a gradient and 40 rotated rectangles."""
    import cv2
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 110, (TILE, TILE, 3), dtype=np.uint8)
    img[..., 1] = (img[..., 1] * 0.5 + np.linspace(0, 60, TILE)[None]).astype(np.uint8)
    for _ in range(40):
        centre = rng.uniform(30, TILE - 30, 2)
        size = rng.uniform([20, 8], [60, 24])
        pts = cv2.boxPoints((tuple(centre), tuple(size), float(rng.uniform(0, 180))))
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)],
                     tuple(int(c) for c in rng.integers(150, 255, 3)))
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def write_scene(path: str, size: int) -> None:
    """A tiled size x size GeoTIFF (UTM 33N, 0.5 m), written one tile row at a time."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window
    tile = tile_image()
    with rasterio.open(path, 'w', driver='GTiff', width=size, height=size, count=3,
                       dtype='uint8', crs='EPSG:32633', tiled=True, blockxsize=256,
                       blockysize=256, transform=Affine(0.5, 0, 500000, 0, -0.5, 4500000)) as ds:
        for y in range(0, size, TILE):
            h = min(TILE, size - y)
            row = np.tile(tile[:, :h], (1, 1, -(-size // TILE)))[:, :, :size]
            ds.write(row, window=Window(0, y, size, h))


def rss_mb() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def worker(args) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from bhcl.apis import RotatedDetInferencer, infer_scene
    inferencer = RotatedDetInferencer(CONFIG, None, device='cpu')
    inferencer.predict_arrays([np.zeros((args.patch_size, args.patch_size, 3), np.uint8) + 90])
    base = rss_mb()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = infer_scene(inferencer, args.worker, patch_size=args.patch_size,
                         patch_overlap=args.patch_overlap, batch_size=args.batch_size,
                         score_thr=args.score_thr)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(windows=result.windows_run, seconds=seconds,
                windows_per_s=result.windows_run / seconds,
                cpu_s_per_window=cpu / max(result.windows_run, 1),
                detections=len(result.detections), peak_rss_mb=peak, base_rss_mb=base,
                above_base_mb=peak - base)


def cpu_seconds() -> float:
    """User + system CPU time of this process: unlike wall time, it does not count
    the time other processes hold a shared CPU."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return None
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        for size in args.sizes:
            path = osp.join(tmp, f'scene_{size}.tif')
            t = time.perf_counter()
            write_scene(path, size)
            print(f'{size} px scene written in {time.perf_counter() - t:.1f} s '
                  f'({osp.getsize(path) / 2**20:.0f} MiB)', flush=True)
            cmd = [sys.executable, osp.abspath(__file__), '--worker', path,
                   '--patch-size', str(args.patch_size), '--patch-overlap',
                   str(args.patch_overlap), '--batch-size', str(args.batch_size),
                   '--score-thr', str(args.score_thr), '--threads', str(args.threads)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode:
                sys.exit(f'worker for {size} px failed:\n{out.stderr[-3000:]}')
            row = dict(size=size, **json.loads(out.stdout.strip().splitlines()[-1]))
            rows.append(row)
            os.remove(path)
            print(f'{size:>6} px: {row["windows"]:>5} windows, {row["windows_per_s"]:.2f} '
                  f'windows/s, peak {row["peak_rss_mb"]:.0f} MiB', flush=True)
    print(f'\nCPU, {args.threads} thread(s), patch {args.patch_size} px, overlap '
          f'{args.patch_overlap}, batch {args.batch_size}, score >= {args.score_thr}')
    print('| scene (px) | windows | time (s) | windows/s | CPU s / window | detections '
          '| peak RSS (MiB) | peak above model (MiB) |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["size"]}^2 | {r["windows"]} | {r["seconds"]:.1f} | '
              f'{r["windows_per_s"]:.2f} | {r["cpu_s_per_window"]:.3f} | {r["detections"]} | '
              f'{r["peak_rss_mb"]:.0f} | {r["above_base_mb"]:.0f} |')
    ratio = rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']
    per_window = rows[-1]['cpu_s_per_window'] / rows[0]['cpu_s_per_window']
    print(f'peak memory, largest / smallest scene: {ratio:.2f}x (target <= 1.5x); '
          f'CPU time per window, largest / smallest: {per_window:.2f}x (linear time: ~1x)')
    return rows


if __name__ == '__main__':
    main()
