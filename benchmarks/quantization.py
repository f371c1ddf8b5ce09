"""
Quantized vector search at scale: latency, recall and memory.

    python benchmarks/quantization.py [--n 100000] [--dims 768]
                                      [--configs float,bit4x8,ivf,...]
                                      [--pragmas tuned|cache|default]
                                      [--data synthetic|faq]

For each configuration a fresh database file is built (ingest rate
printed), then a separate process opens it and answers the queries, so the
peak RSS printed is that of a process that searches the file (paged through
SQLite's cache), not of the one that generated the data. Baseline: numpy
brute force over the float32 vectors in RAM, in the same query process.
Data: synthetic unit vectors shaped like text embeddings (knn.embedding_like)
with queries near stored vectors; or, with --data faq, the course FAQ
documents and dev questions (DataTalksClub LLM Zoomcamp, read from
../shared/data/faq) embedded by LocalEmbedder (384-d; cached as in
hybrid_quality.py).

Matryoshka truncation (trunc2, trunc3: keep the first half or third of the
dimensions) only suits models trained for it, which front-load what
matters. The synthetic vectors stand in for such a model by being rotated
so that their coordinates come in order of decreasing variance (a rotation
leaves every distance, and so the true neighbours, unchanged); the FAQ
vectors are truncated as LocalEmbedder makes them (a model not trained for
truncation).
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
    # bitBxO: B bits per element, O candidates per result.
    'bit1x8': dict(quantize='bit', bits=1, oversample=8),
    'bit1x32': dict(quantize='bit', bits=1, oversample=32),
    'bit2x8': dict(quantize='bit', bits=2, oversample=8),
    'bit4x8': dict(quantize='bit', bits=4, oversample=8),
    'bit4x16': dict(quantize='bit', bits=4, oversample=16),
    'bit8x8': dict(quantize='bit', bits=8, oversample=8),
    'int8': dict(quantize='int8'),
    # Inverted lists: sqrt(n) lists, rounded up to a power of two; the
    # search is measured at several probes (fractions of the lists).
    'ivf': dict(lists='sqrt', probes=[1 / 16., 3 / 32., 7 / 64., 1 / 8.]),
    # Lists and bits (oversample: 64 by default with lists).
    'ivf-bit4': dict(lists='sqrt', probes=[1 / 16., 3 / 32., 1 / 8.],
                     quantize='bit', bits=4),
    'ivf-bit4x16': dict(lists='sqrt', probes=[1 / 16., 3 / 32., 1 / 8.],
                        quantize='bit', bits=4, oversample=16),
    'ivf-bit8': dict(lists='sqrt', probes=[1 / 16., 3 / 32., 1 / 8.],
                     quantize='bit', bits=8),
    # Matryoshka: keep the first dims // 2 or dims // 3 elements.
    'trunc2': dict(matryoshka=2),
    'trunc3': dict(matryoshka=3),
}
PRAGMAS = {
    'tuned': 'vector_pragmas()',                  # 64 KiB pages, 64 MB cache
    'cache': [('cache_size', -65536)],            # 4 KiB pages, 64 MB cache
    'default': [],                                # SQLite's (2 MB cache)
}


def field_options(options, n, dims):
    """A CONFIGS entry made concrete for n rows of dims elements: (field
    options, probes to measure)."""
    options = dict(options, dims=dims)
    sweep = options.pop('probes', [None])
    if options.get('lists') == 'sqrt':
        options['lists'] = 2 ** int(np.ceil(np.log2(np.sqrt(n))))
        sweep = sorted(set(max(1, int(options['lists'] * p))
                           for p in sweep))
    if options.get('matryoshka'):
        options['dims'] = dims // options.pop('matryoshka') // 8 * 8
        options['matryoshka'] = True
    return options, sweep


def dataset(data, n, dims, count):
    """(vectors, queries) as float32 arrays of unit vectors."""
    if data == 'faq':
        return faq_vectors()
    vectors, make_queries = embedding_like(n, dims, seed=0)
    return vectors, make_queries(count)


def faq_vectors():
    """The FAQ documents and dev questions embedded by LocalEmbedder."""
    import faq
    import hybrid_quality
    from playhouse_vec import LocalEmbedder
    documents, questions = faq.load('dev')
    embedder = LocalEmbedder()
    db, _, _, DocVec = hybrid_quality.build(documents, embedder)
    vectors = np.stack([v for v, in DocVec.select(DocVec.embedding)
                        .order_by(DocVec.rowid).tuples()])
    db.close()
    return vectors, hybrid_quality.query_vectors(embedder, questions)


def variance_order(vectors):
    """An orthogonal matrix whose columns are the directions of the vectors'
    largest second moment, largest first: ``vectors @ R`` puts what
    distinguishes them in the leading coordinates, as a model trained for
    Matryoshka truncation does."""
    sample = vectors[:20000].astype(np.float64)
    _, directions = np.linalg.eigh(sample.T @ sample)
    return np.ascontiguousarray(directions[:, ::-1], dtype=np.float32)


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


def model(path, options, pragmas):
    from peewee import SqliteDatabase
    from playhouse_vec import VecModel
    from playhouse_vec import VectorField
    db = SqliteDatabase(path, pragmas=pragma_list(pragmas))
    options = dict(options)
    dims = options.pop('dims')

    class Item(VecModel):
        embedding = VectorField(dims, metric='cosine', **options)

        class Meta:
            database = db
            table_name = 'item'
    return db, Item


def build(path, vectors, options, pragmas, rotate=False):
    """Fill a fresh database; returns the ingest rate. With ``rotate``, a
    Matryoshka table gets the vectors rotated by variance_order(), saved
    beside it for the queries."""
    n = len(vectors)
    if rotate and options.get('matryoshka'):
        rotation = variance_order(vectors)
        np.save(path + '.rotation.npy', rotation)
        vectors = vectors @ rotation
    db, Item = model(path, options, pragmas)
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


def query(path, options, pragmas, sweep=(None,), data=None):
    """Runs in its own process; prints one JSON line. With ``data`` (data
    set, n, dims, query count): the numpy baseline; else the search of the
    database at ``path``, for the queries read from stdin."""
    if data:
        vectors, queries = dataset(*data)
        queries = queries.tolist()
    else:
        db, Item = model(path, options, pragmas)
        queries = json.loads(sys.stdin.read())
        if os.path.exists(path + '.rotation.npy'):
            rotation = np.load(path + '.rotation.npy')
            queries = (np.asarray(queries, np.float32) @ rotation).tolist()
    truth, numpy_ms = [], []
    if data:
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
                        default='float,bit1x8,bit4x8,bit4x16,bit8x8,int8,'
                                'ivf,ivf-bit4')
    parser.add_argument('--pragmas', default='tuned', choices=PRAGMAS)
    parser.add_argument('--data', default='synthetic',
                        choices=('synthetic', 'faq'))
    parser.add_argument('--child', default=None)
    args = parser.parse_args()
    if args.child:
        return query(*json.loads(args.child))
    if args.data == 'faq':
        import faq
        if faq.faq_dir() is None:
            print('FAQ data not found (../shared/data/faq); nothing to '
                  'measure.')
            return
    run(args.n, args.dims, args.queries, args.configs.split(','),
        args.pragmas, args.data)


def run(n, dims, queries, configs, pragmas, data='synthetic'):
    """Build and search each configuration; print one line each."""
    results = {}
    vectors, _ = dataset(data, n, dims, 0)
    n, dims = vectors.shape
    with tempfile.TemporaryDirectory() as directory:
        baseline = child('', {}, pragmas, [None],
                         [data, n, dims, queries])
        print('%s data: %d x %d, cosine, k=10, %d queries; PRAGMAs %s' % (
            data, n, dims, len(baseline['queries']), pragma_list(pragmas)))
        print('  numpy brute force (all vectors in RAM): p50 %.2f ms, peak '
              'RSS %.0f MB' % (baseline['numpy_p50'], baseline['rss_mb']))
        for name in configs:
            options, sweep = field_options(CONFIGS[name], n, dims)
            path = os.path.join(directory, '%s.db' % name)
            rate = build(path, vectors, options, pragmas,
                         rotate=data == 'synthetic')
            out = child(path, options, pragmas, sweep,
                        stdin=json.dumps(baseline['queries']))
            for result in out['results']:
                recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(
                    baseline['truth'], result['found'])])
                label = name if result['probes'] is None else '%s/%d' % (
                    name, result['probes'])
                if options.get('matryoshka'):
                    label = '%s:%d' % (name, options['dims'])
                print('  %-11s p50 %7.2f ms (%5.2fx numpy)  recall@10 %.3f  '
                      'peak RSS %4.0f MB  file %5.0f MB  ingest %6.0f '
                      'rows/s' % (label, result['p50'], result['p50'] /
                                  baseline['numpy_p50'], recall,
                                  out['rss_mb'],
                                  os.path.getsize(path) / 2 ** 20, rate))
                results[label] = dict(result, recall=recall, ingest=rate,
                                      rss_mb=out['rss_mb'],
                                      numpy_p50=baseline['numpy_p50'])
            for leftover in (path, path + '.rotation.npy'):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return results


if __name__ == '__main__':
    main()
