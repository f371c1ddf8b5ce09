"""
Quantized vector search at scale: latency, recall and memory.

    python benchmarks/quantization.py [--n 100000] [--dims 768]
                                      [--configs float,bit8,bit16,int8]

For each configuration a fresh database file is built (ingest rate
printed), then a separate process opens it and answers the queries, so the
peak RSS printed is that of a process that searches the file (paged through
SQLite's cache), not of the one that generated the data. Baseline: numpy
brute force over the float32 vectors in RAM, in the same query process.
Data: synthetic unit vectors shaped like text embeddings (knn.embedding_like)
with queries near stored vectors.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from knn import embedding_like  # noqa: E402

CONFIGS = {
    'float': dict(),
    'bit8': dict(quantize='bit', oversample=8),
    'bit16': dict(quantize='bit', oversample=16),
    'bit32': dict(quantize='bit', oversample=32),
    'int8': dict(quantize='int8'),
}
PRAGMAS = {'cache_size': -65536, 'mmap_size': 0}   # a 64 MB page cache


def peak_rss_mb():
    """VmHWM: this process's peak resident memory (ru_maxrss would carry
    over the parent's peak across fork and exec)."""
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0


def model(path, dims, options):
    from peewee import SqliteDatabase
    from playhouse_vec import VecModel
    from playhouse_vec import VectorField
    db = SqliteDatabase(path, pragmas=PRAGMAS)

    class Item(VecModel):
        embedding = VectorField(dims, metric='cosine', **options)

        class Meta:
            database = db
            table_name = 'item'
    return db, Item


def build(path, n, dims, options, seed):
    vectors, _ = embedding_like(n, dims, seed=seed)
    db, Item = model(path, dims, options)
    db.create_tables([Item])
    start = time.perf_counter()
    with db.atomic():
        for lo in range(0, n, 2000):
            Item.insert_many([{'rowid': i + 1, 'embedding': vectors[i]}
                              for i in range(lo, min(n, lo + 2000))]
                             ).execute()
    rate = n / (time.perf_counter() - start)
    if options.get('quantize') == 'bit':
        start = time.perf_counter()
        Item.train()
        print('    train: %.1f s' % (time.perf_counter() - start))
    db.close()
    return rate


def query(path, n, dims, options, seed, count, with_numpy):
    """Runs in its own process; prints one JSON line."""
    db, Item = model(path, dims, options)
    vectors, make_queries = embedding_like(n, dims, seed=seed) \
        if with_numpy else (None, None)
    if not with_numpy:
        queries = json.loads(sys.stdin.read())
    else:
        queries = make_queries(count).tolist()
    truth, numpy_ms = [], []
    if with_numpy:
        for q in queries:
            start = time.perf_counter()
            scores = vectors @ np.asarray(q, np.float32)
            top = np.argpartition(-scores, 10)[:10]
            numpy_ms.append((time.perf_counter() - start) * 1000)
            truth.append((top + 1).tolist())
        print(json.dumps({'truth': truth, 'queries': queries,
                          'numpy_p50': statistics.median(numpy_ms),
                          'rss_mb': peak_rss_mb()}))
        return
    [r.rowid for r in Item.knn(queries[0], k=10)]          # warm up
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        found.append([r.rowid for r in Item.knn(q, k=10)])
        times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({'found': found, 'p50': statistics.median(times),
                      'rss_mb': peak_rss_mb()}))


def child(*args, stdin=None):
    out = subprocess.run([sys.executable, __file__, '--child'] +
                         [json.dumps(args)], input=stdin, text=True,
                         capture_output=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=100000)
    parser.add_argument('--dims', type=int, default=768)
    parser.add_argument('--queries', type=int, default=50)
    parser.add_argument('--configs', default='float,bit8,bit16,bit32,int8')
    parser.add_argument('--child', default=None)
    args = parser.parse_args()
    if args.child:
        return query(*json.loads(args.child))
    seed = 0
    print('%d x %d, cosine, k=10, %d queries; PRAGMAs %s' % (
        args.n, args.dims, args.queries, PRAGMAS))
    with tempfile.TemporaryDirectory() as directory:
        baseline = child('', args.n, args.dims, {}, seed, args.queries, True)
        print('  numpy brute force (all vectors in RAM): p50 %.2f ms, peak '
              'RSS %.0f MB' % (baseline['numpy_p50'], baseline['rss_mb']))
        for name in args.configs.split(','):
            options = CONFIGS[name]
            path = os.path.join(directory, '%s.db' % name)
            rate = build(path, args.n, args.dims, options, seed)
            result = child(path, args.n, args.dims, options, seed,
                           args.queries, False,
                           stdin=json.dumps(baseline['queries']))
            recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(
                baseline['truth'], result['found'])])
            print('  %-6s p50 %8.2f ms (%5.1fx numpy)  recall@10 %.3f  '
                  'peak RSS %4.0f MB  file %5.0f MB  ingest %6.0f rows/s'
                  % (name, result['p50'], result['p50'] /
                     baseline['numpy_p50'], recall, result['rss_mb'],
                     os.path.getsize(path) / 2 ** 20, rate))
            os.remove(path)


if __name__ == '__main__':
    main()
