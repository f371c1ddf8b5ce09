"""
Quantized vector search at scale: latency, recall and memory.

    python benchmarks/quantization.py [--n 100000] [--dims 768]
                                      [--configs float,bit8,ivf,...]
                                      [--pragmas tuned|cache|default]

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
    # Inverted lists: sqrt(n) lists, rounded up to a power of two; the
    # search is measured at several probes (fractions of the lists).
    'ivf': dict(lists='sqrt', probes=[1 / 16., 3 / 32., 7 / 64., 1 / 8.]),
    'ivf-bit': dict(lists='sqrt', probes=[1 / 8.], quantize='bit',
                    oversample=8),
}
PRAGMAS = {
    'tuned': 'vector_pragmas()',                  # 64 KiB pages, 64 MB cache
    'cache': [('cache_size', -65536)],            # 4 KiB pages, 64 MB cache
    'default': [],                                # SQLite's (2 MB cache)
}


def field_options(options, n):
    """A CONFIGS entry made concrete for n rows: (field options, probes to
    measure)."""
    options = dict(options)
    sweep = options.pop('probes', [None])
    if options.get('lists') == 'sqrt':
        options['lists'] = 2 ** int(np.ceil(np.log2(np.sqrt(n))))
        sweep = [max(1, int(options['lists'] * p)) for p in sweep]
    return options, sweep


def pragma_list(name):
    from playhouse_vec import vector_pragmas
    return vector_pragmas() if PRAGMAS[name] == 'vector_pragmas()' \
        else PRAGMAS[name]


def peak_rss_mb():
    """VmHWM: this process's peak resident memory (ru_maxrss would carry
    over the parent's peak across fork and exec)."""
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0


def model(path, dims, options, pragmas):
    from peewee import SqliteDatabase
    from playhouse_vec import VecModel
    from playhouse_vec import VectorField
    db = SqliteDatabase(path, pragmas=pragma_list(pragmas))

    class Item(VecModel):
        embedding = VectorField(dims, metric='cosine', **options)

        class Meta:
            database = db
            table_name = 'item'
    return db, Item


def build(path, n, dims, options, seed, pragmas):
    vectors, _ = embedding_like(n, dims, seed=seed)
    db, Item = model(path, dims, options, pragmas)
    db.create_tables([Item])
    start = time.perf_counter()
    with db.atomic():
        for lo in range(0, n, 2000):
            Item.insert_many([{'rowid': i + 1, 'embedding': vectors[i]}
                              for i in range(lo, min(n, lo + 2000))]
                             ).execute()
    rate = n / (time.perf_counter() - start)
    if options.get('quantize') == 'bit' or options.get('lists'):
        start = time.perf_counter()
        Item.train()
        print('    train %s: %.1f s' % (options, time.perf_counter() - start))
    db.close()
    return rate


def query(path, n, dims, options, seed, count, with_numpy, pragmas,
          sweep=(None,)):
    """Runs in its own process; prints one JSON line."""
    db, Item = model(path, dims, options, pragmas) if path else (None, None)
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
    results = []
    for probes in sweep:
        times, found = [], []
        for q in queries:
            start = time.perf_counter()
            found.append([r.rowid for r in Item.knn(q, k=10, probes=probes)])
            times.append((time.perf_counter() - start) * 1000)
        results.append({'probes': probes, 'found': found,
                        'p50': statistics.median(times)})
    print(json.dumps({'results': results, 'rss_mb': peak_rss_mb()}))


def child(*args, stdin=None):
    out = subprocess.run([sys.executable, __file__, '--child'] +
                         [json.dumps(args)], input=stdin, text=True,
                         capture_output=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=100000)
    parser.add_argument('--dims', type=int, default=768)
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--configs',
                        default='float,bit8,bit16,bit32,int8,ivf,ivf-bit')
    parser.add_argument('--pragmas', default='tuned', choices=PRAGMAS)
    parser.add_argument('--child', default=None)
    args = parser.parse_args()
    if args.child:
        return query(*json.loads(args.child))
    print('%d x %d, cosine, k=10, %d queries; PRAGMAs %s' % (
        args.n, args.dims, args.queries, pragma_list(args.pragmas)))
    run(args.n, args.dims, args.queries, args.configs.split(','),
        args.pragmas)


def run(n, dims, queries, configs, pragmas, seed=0):
    """Build and search each configuration; print one line each."""
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        baseline = child('', n, dims, {}, seed, queries, True, pragmas)
        print('  numpy brute force (all vectors in RAM): p50 %.2f ms, peak '
              'RSS %.0f MB' % (baseline['numpy_p50'], baseline['rss_mb']))
        for name in configs:
            options, sweep = field_options(CONFIGS[name], n)
            path = os.path.join(directory, '%s.db' % name)
            rate = build(path, n, dims, options, seed, pragmas)
            out = child(path, n, dims, options, seed, queries, False,
                        pragmas, sweep, stdin=json.dumps(baseline['queries']))
            for result in out['results']:
                recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(
                    baseline['truth'], result['found'])])
                label = name if result['probes'] is None else '%s/%d' % (
                    name, result['probes'])
                print('  %-11s p50 %7.2f ms (%5.2fx numpy)  recall@10 %.3f  '
                      'peak RSS %4.0f MB  file %5.0f MB  ingest %6.0f '
                      'rows/s' % (label, result['p50'], result['p50'] /
                                  baseline['numpy_p50'], recall,
                                  out['rss_mb'],
                                  os.path.getsize(path) / 2 ** 20, rate))
                results[label] = dict(result, recall=recall, ingest=rate,
                                      rss_mb=out['rss_mb'],
                                      numpy_p50=baseline['numpy_p50'])
            os.remove(path)
    return results


if __name__ == '__main__':
    main()
