"""
Ingest rate: documents with three text fields and a 768-d vector written to
a content table, its FTS5 index (by triggers) and a vec0 table, in
transactions of 5,000 documents (``--batch``; 1,000 costs ~15%).

    python benchmarks/ingest.py [--docs 100000] [--dims 768] [--batch 5000]
                                [--pragmas tuned|cache|default]
"""
import argparse
import os
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from knn import embedding_like  # noqa: E402
from quantization import PRAGMAS  # noqa: E402
from quantization import pragma_list  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--docs', type=int, default=100000)
    parser.add_argument('--dims', type=int, default=768)
    parser.add_argument('--batch', type=int, default=5000)
    parser.add_argument('--pragmas', default='tuned', choices=PRAGMAS)
    args = parser.parse_args()
    ingest(args.docs, args.dims, args.pragmas, args.batch)


def ingest(docs, dims, pragmas, batch=5000):
    """Ingest ``docs`` documents; print and return the rate (docs/s)."""
    vectors, _ = embedding_like(docs, dims)
    rng = np.random.default_rng(0)
    words = np.array(['w%d' % i for i in range(5000)])
    picks = rng.integers(0, 5000, size=(docs, 48))
    # The documents exist before the ingest starts (as they would in a
    # file or another database): making up their text is not timed.
    texts = [(i + 1, ' '.join(words[picks[i, :6]]),
              ' '.join(words[picks[i, 6:18]]), ' '.join(words[picks[i, 18:]]))
             for i in range(docs)]
    with tempfile.TemporaryDirectory() as directory:
        db = SqliteDatabase(os.path.join(directory, 'ingest.db'),
                            pragmas=pragma_list(pragmas))

        class Doc(Model):
            title = TextField()
            summary = TextField()
            body = TextField()

            class Meta:
                database = db

        class DocFTS(FTSModel):
            title = SearchField()
            summary = SearchField()
            body = SearchField()

            class Meta:
                database = db
                content = Doc

        class DocVec(VecModel):
            embedding = VectorField(dims, metric='cosine')

            class Meta:
                database = db
                content = Doc

        db.create_tables([Doc, DocFTS, DocVec])
        parts = [0.0, 0.0]    # content + FTS5, vec0 (commits aside)
        start = time.perf_counter()
        for lo in range(0, docs, batch):
            hi = min(docs, lo + batch)
            with db.atomic():
                t0 = time.perf_counter()
                Doc.insert_many(
                    texts[lo:hi],
                    fields=[Doc.id, Doc.title, Doc.summary, Doc.body]
                ).execute()
                t1 = time.perf_counter()
                DocVec.insert_many([{'rowid': i + 1,
                                     'embedding': vectors[i]}
                                    for i in range(lo, hi)]).execute()
                t2 = time.perf_counter()
            parts[0] += t1 - t0
            parts[1] += t2 - t1
        elapsed = time.perf_counter() - start
        print('%d documents (3 text fields, %d-d vector) -> content + FTS5 '
              '+ vec0: %.0f docs/s (%.1f s: content + FTS5 %.1f s, vec0 '
              '%.1f s, commits %.1f s); %d per transaction, chunk_size=%d, '
              'PRAGMAs %s'
              % (docs, dims, docs / elapsed, elapsed, parts[0], parts[1],
                 elapsed - sum(parts), batch, DocVec._vec.chunk_size,
                 pragma_list(pragmas)))
        assert DocFTS.check_index().ok and DocVec.check_index().ok
        db.close()
    return docs / elapsed


if __name__ == '__main__':
    main()
