"""
KNN latency: playhouse_vec's ``knn()`` vs the same query as hand-written SQL
vs numpy brute force in RAM, on synthetic embedding-like data (low rank plus
noise, unit length, cosine).

    python benchmarks/knn.py [--sizes 10000x384,100000x768] [--queries 200]

Every measurement of one query runs back to back, in a random order, in this
one process (a fixed rotation would always run the same method right after
numpy's scan, which evicts the CPU caches); the p50 over the queries is
printed with ratios.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from peewee import SqliteDatabase

from playhouse_vec import VecModel
from playhouse_vec import VectorField


K = 10


def embeddings(n, dims, rng, rank=64):
    basis = rng.normal(size=(rank, dims)).astype(np.float32)
    x = rng.normal(size=(n, rank)).astype(np.float32) @ basis
    x += 0.5 * np.sqrt(rank) * rng.normal(size=(n, dims)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embedding_like(n, dims, seed=0, rank=64, noise=0.6, mean=0.9,
                   query_noise=1.6):
    """(vectors, queries): unit vectors shaped like text embeddings, and
    queries near stored vectors, as questions are near the documents that
    answer them. Calibrated on multilingual-e5-small vectors of the course
    FAQ data: the vectors share a mean of norm ~0.9 (embeddings are
    anisotropic); around it, a low-rank structure plus noise; a question's
    best match has cosine ~0.9, its 10th ~0.85."""
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.sqrt(np.arange(1, rank + 1))
    basis = rng.normal(size=(rank, dims)).astype(np.float32)
    shared = rng.normal(size=dims).astype(np.float32)
    shared /= np.linalg.norm(shared)

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    r = (rng.normal(size=(n, rank)) * spectrum).astype(np.float32) @ basis
    r = unit(unit(r) + noise * unit(rng.normal(size=(n, dims)).astype(
        np.float32)))
    spread = np.sqrt(1 - mean ** 2)
    x = unit(mean * shared + spread * r).astype(np.float32)

    def queries(count, seed=1):
        qrng = np.random.default_rng(seed)
        rq = unit(r[qrng.integers(0, n, count)] + query_noise * unit(
            qrng.normal(size=(count, dims)).astype(np.float32)))
        return unit(mean * shared + spread * rq).astype(np.float32)

    return x, queries


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(n, dims, n_queries, directory):
    rng = np.random.default_rng(0)
    db = SqliteDatabase(os.path.join(directory, 'knn_%d_%d.db' % (n, dims)))

    class Item(VecModel):
        embedding = VectorField(dims, metric='cosine')

        class Meta:
            database = db
            table_name = 'item'

    db.create_tables([Item])
    vectors = embeddings(n, dims, rng)
    start = time.perf_counter()
    with db.atomic():
        for lo in range(0, n, 1000):
            Item.insert_many([{'rowid': i + 1, 'embedding': vectors[i]}
                              for i in range(lo, min(n, lo + 1000))]
                             ).execute()
    ingest = n / (time.perf_counter() - start)
    queries = embeddings(n_queries, dims, rng)
    conn = db.connection()
    sql_full = ('SELECT rowid, embedding, distance FROM item '
                'WHERE embedding MATCH ? AND k = ? ORDER BY distance')
    sql_ids = ('SELECT rowid, distance FROM item '
               'WHERE embedding MATCH ? AND k = ? ORDER BY distance')

    def orm_full(q):
        return [r.rowid for r in Item.knn(q, k=K)]

    def orm_ids(q):
        return [r.rowid for r in
                Item.knn(q, k=K).select(Item.rowid, Item.distance)]

    def sql(statement):
        def run_sql(q):
            rows = conn.execute(statement, (q.tobytes(), K)).fetchall()
            return [r[0] for r in rows]
        return run_sql

    def numpy_brute(q):
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        return (top[np.argsort(-scores[top])] + 1).tolist()

    methods = [('orm knn() all columns', orm_full),
               ('hand-written SQL all columns', sql(sql_full)),
               ('orm knn() rowid+distance', orm_ids),
               ('hand-written SQL rowid+distance', sql(sql_ids)),
               ('numpy brute force (in RAM)', numpy_brute)]
    for name, method in methods:  # Warm the page cache and code paths.
        method(queries[0])
    times = dict((name, []) for name, _ in methods)
    recall = []
    for q in queries:
        order = [methods[j] for j in rng.permutation(len(methods))]
        results = {}
        for name, method in order:
            elapsed, results[name] = timed(lambda: method(q))
            times[name].append(elapsed)
        truth = set(results['numpy brute force (in RAM)'])
        recall.append(len(truth & set(results['orm knn() all columns'])) / K)
    p50 = dict((name, statistics.median(t) * 1000) for name, t in
               times.items())
    print('\n%d x %d float32 cosine, k=%d, %d queries, chunk_size=%d, '
          'ingest %.0f rows/s, recall@10 vs numpy %.3f' % (
              n, dims, K, n_queries, Item._vec.chunk_size, ingest,
              np.mean(recall)))
    for name, _ in methods:
        print('  %-34s p50 %8.2f ms' % (name, p50[name]))
    for label, orm, sql in (
            ('all columns', 'orm knn() all columns',
             'hand-written SQL all columns'),
            ('rowid+distance', 'orm knn() rowid+distance',
             'hand-written SQL rowid+distance')):
        # The ratio of the p50s, and the p50 of each query's own ratio
        # (which cancels drift in the machine's speed during the run).
        paired = statistics.median(
            a / b for a, b in zip(times[orm], times[sql]))
        print('  ratio orm/SQL (%s)%s %.3f   per-query p50 %.3f' % (
            label, ' ' * (19 - len(label)), p50[orm] / p50[sql], paired))
    print('  ratio SQL/numpy                    %.2f' % (
        p50['hand-written SQL rowid+distance'] /
        p50['numpy brute force (in RAM)']))
    db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='10000x384,100000x768')
    parser.add_argument('--queries', type=int, default=200)
    args = parser.parse_args()
    import peewee
    print('peewee %s, SQLite %s, driver %s' % (
        peewee.__version__, peewee.sqlite3.sqlite_version,
        peewee.sqlite3.__name__))
    with tempfile.TemporaryDirectory() as directory:
        for size in args.sizes.split(','):
            n, dims = map(int, size.split('x'))
            run(n, dims, args.queries, directory)


if __name__ == '__main__':
    main()
