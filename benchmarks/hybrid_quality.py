"""
Retrieval quality of text, vector and hybrid search on the course FAQ dev
questions (DataTalksClub LLM Zoomcamp data, read from ../shared/data/faq),
with the course filter: hit@5 and MRR@5.

Vectors come from LocalEmbedder. The first run embeds the 948 documents
(a few minutes on 2 cores); embeddings are cached in
$PLAYHOUSE_VEC_CACHE (default ~/.cache/playhouse_vec), so later runs take
seconds.

    python benchmarks/hybrid_quality.py [--grid]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
from peewee import SqliteDatabase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faq  # noqa: E402

from playhouse_vec import LocalEmbedder  # noqa: E402
from playhouse_vec import hybrid_search  # noqa: E402

CACHE = os.environ.get('PLAYHOUSE_VEC_CACHE',
                       os.path.expanduser('~/.cache/playhouse_vec'))


def build(documents, embedder):
    os.makedirs(CACHE, exist_ok=True)
    db = SqliteDatabase(os.path.join(CACHE, 'faq_quality.db'))
    Doc, DocFTS, DocVec = faq.declare(db, embedder=embedder)
    start = time.perf_counter()
    stats = DocVec.index(progress=True, batch_size=32)
    if stats.embedded:
        print('embedded %d documents in %.0f s' % (
            stats.embedded, time.perf_counter() - start))
    return db, Doc, DocFTS, DocVec


def query_vectors(embedder, questions):
    key = hashlib.sha256(json.dumps(
        [embedder.fingerprint, [q for q, _, _ in questions]]).encode()
    ).hexdigest()[:16]
    path = os.path.join(CACHE, 'faq_queries_%s.npy' % key)
    if os.path.exists(path):
        return np.load(path)
    start = time.perf_counter()
    vectors = embedder.embed_queries([q for q, _, _ in questions])
    print('embedded %d questions in %.0f s' % (
        len(questions), time.perf_counter() - start))
    np.save(path, vectors)
    return vectors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--grid', action='store_true',
                        help='also try other fusion settings')
    args = parser.parse_args()
    data = faq.load('dev')
    if data is None:
        print('FAQ data not found (../shared/data/faq); nothing to measure.')
        return
    documents, questions = data
    embedder = LocalEmbedder()
    db, Doc, DocFTS, DocVec = build(documents, embedder)
    vectors = query_vectors(embedder, questions)
    by_question = dict((q, v) for (q, _, _), v in zip(questions, vectors))
    ids = dict(Doc.select(Doc.id, Doc.doc_id).tuples())

    def text_only(question, course, k=5):
        return [d.doc_id for d in DocFTS.search(question, k=k)
                .where(Doc.course == course)]

    def vector_only(question, course, k=5):
        return [ids[r.rowid] for r in
                DocVec.knn(by_question[question], k=k)
                .where(Doc.course == course)]

    def hybrid(**options):
        def search(question, course):
            return [d.doc_id for d in hybrid_search(
                DocVec, DocFTS, text=question, vector=by_question[question],
                k=5, **options).where(Doc.course == course)]
        return search

    runs = [('FTS5 bm25 alone', text_only),
            ('vector alone (LocalEmbedder)', vector_only),
            ('hybrid, defaults (min-max 1/1.5)', hybrid()),
            ('hybrid, plain RRF k=60 1/1', hybrid(
                fusion='rrf', weights={'vec': 1, 'fts': 1}, depth=40))]
    if args.grid:
        for fusion, weights in (('rrf', (1, 1)), ('rrf', (1, 2)),
                                ('rrf', (1, 3)), ('minmax', (1, 1)),
                                ('minmax', (1, 1.5)), ('minmax', (1, 2))):
            for rrf_k in ((1, 10, 60) if fusion == 'rrf' else (60,)):
                for depth in (10, 20, 40):
                    runs.append((
                        '%s k=%d w=%s/%s depth=%d' % (
                            fusion, rrf_k, weights[0], weights[1], depth),
                        hybrid(fusion=fusion, rrf_k=rrf_k, depth=depth,
                               weights={'vec': weights[0],
                                        'fts': weights[1]})))
    print('%d documents, %d dev questions, course filter, top 5' % (
        len(documents), len(questions)))
    print('%-36s %7s %7s %9s' % ('method', 'hit@5', 'MRR@5', 'ms/query'))
    for name, search in runs:
        start = time.perf_counter()
        hit, mrr = faq.evaluate(search, questions)
        elapsed = (time.perf_counter() - start) / len(questions) * 1000
        print('%-36s %7.4f %7.4f %9.2f' % (name, hit, mrr, elapsed))
    print('questions whose answer either leg ranks in its top n (what '
          'fusion can reach):')
    print('  ' + '  '.join('n=%d %.4f' % (n, reachable(
        (text_only, vector_only), questions, n)) for n in (5, 10, 20)))
    db.close()


def reachable(legs, questions, n):
    """The share of questions whose answer is among some leg's n best."""
    found = 0
    for question, course, expected in questions:
        found += any(expected in leg(question, course, n) for leg in legs)
    return found / len(questions)


if __name__ == '__main__':
    main()
