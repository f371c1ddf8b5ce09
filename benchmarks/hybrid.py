"""
hybrid_search latency vs its two legs run separately, at 100k documents.

Synthetic corpus: 30 words per document drawn from a Zipf-distributed
vocabulary of 20,000 words, and a 384-d embedding-like vector (low rank plus
noise, unit length). Each query has 4 words and a vector.

    python benchmarks/hybrid.py [--docs 100000] [--queries 50]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from peewee import Model
from peewee import SqliteDatabase
from peewee import TextField

from playhouse_vec import FTSModel
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import hybrid_search

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from knn import embeddings  # noqa: E402

DIMS = 384
DEPTH = 40
K = 10


def build(path, n, rng):
    db = SqliteDatabase(path)

    class Doc(Model):
        body = TextField()

        class Meta:
            database = db

    class DocFTS(FTSModel):
        body = SearchField()

        class Meta:
            database = db
            content = Doc

    class DocVec(VecModel):
        embedding = VectorField(DIMS, metric='cosine')

        class Meta:
            database = db
            content = Doc

    db.create_tables([Doc, DocFTS, DocVec])
    vocabulary = np.array(['w%d' % i for i in range(20000)])
    ranks = np.minimum(rng.zipf(1.3, size=(n, 30)), 20000) - 1
    vectors = embeddings(n, DIMS, rng)
    start = time.perf_counter()
    with db.atomic():
        for lo in range(0, n, 1000):
            hi = min(n, lo + 1000)
            Doc.insert_many([(i + 1, ' '.join(vocabulary[ranks[i]]))
                             for i in range(lo, hi)],
                            fields=[Doc.id, Doc.body]).execute()
            DocVec.insert_many([{'rowid': i + 1, 'embedding': vectors[i]}
                                for i in range(lo, hi)]).execute()
    rate = n / (time.perf_counter() - start)
    return db, Doc, DocFTS, DocVec, vocabulary, rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--docs', type=int, default=100000)
    parser.add_argument('--queries', type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory:
        db, Doc, DocFTS, DocVec, vocabulary, rate = build(
            os.path.join(directory, 'hybrid.db'), args.docs, rng)
        print('%d documents (content + FTS5 + vec0 %d-d), ingest %.0f docs/s'
              % (args.docs, DIMS, rate))
        texts = [' '.join(rng.choice(vocabulary[20:2000], 4))
                 for _ in range(args.queries)]
        vectors = embeddings(args.queries, DIMS, rng)

        def vec_leg(text, vector):
            return [r.rowid for r in DocVec.knn(vector, k=DEPTH)]

        def fts_leg(text, vector):
            return [r.id for r in DocFTS.search(text, k=DEPTH)]

        def hybrid(text, vector):
            return [r.id for r in hybrid_search(
                DocVec, DocFTS, text=text, vector=vector, k=K, depth=DEPTH)]

        methods = [('vector leg (knn, k=%d)' % DEPTH, vec_leg),
                   ('text leg (FTS5 bm25, k=%d)' % DEPTH, fts_leg),
                   ('hybrid_search (RRF, k=%d)' % K, hybrid)]
        for _, method in methods:
            method(texts[0], vectors[0])
        times = dict((name, []) for name, _ in methods)
        for i, (text, vector) in enumerate(zip(texts, vectors)):
            order = methods[i % 3:] + methods[:i % 3]
            for name, method in order:
                start = time.perf_counter()
                method(text, vector)
                times[name].append(time.perf_counter() - start)
        p50 = dict((name, statistics.median(t) * 1000)
                   for name, t in times.items())
        for name, _ in methods:
            print('  %-30s p50 %8.2f ms' % (name, p50[name]))
        legs = sum(p50[name] for name, _ in methods[:2])
        print('  ratio hybrid / (vector + text legs)  %.3f' % (
            p50[methods[2][0]] / legs))
        db.close()


if __name__ == '__main__':
    main()
