"""
Full-text search quality on the course FAQ dev questions (DataTalksClub
LLM Zoomcamp data, read from ../shared/data/faq): hit@5 and MRR@5 with the
course filter, for tokenizers, field weights and query operators.

    python benchmarks/fts_quality.py

Anchor: another SQLite FTS5 library scored 0.943 / 0.876 on this data.
"""
import os
import sys
import tempfile
import time

from peewee import SqliteDatabase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faq  # noqa: E402

from playhouse_vec.fts import ENGLISH_STOPWORDS  # noqa: E402


def build(path, tokenize):
    """A FAQ document table and its FTS index in a fresh database."""
    db = SqliteDatabase(path)
    Doc, DocFTS, _ = faq.declare(db, tokenize)
    return db, Doc, DocFTS


def run(documents, questions, directory):
    porter = 'porter unicode61 remove_diacritics 2'
    plain = 'unicode61 remove_diacritics 2'
    configs = [
        # (tokenizer, weights question/text/section, operator, stopwords)
        (plain, (1, 1, 1), 'OR', False),
        (porter, (1, 1, 1), 'OR', False),
        (plain, (1, 1, 1), 'OR', True),
        (porter, (1, 1, 1), 'OR', True),     # the defaults
        (porter, (1, 1, 1), 'AND', True),
        (porter, (2, 1, 1), 'OR', True),
        (porter, (1.2, 1, 0.8), 'OR', True),
        (porter, (1, 1, 0), 'OR', True),
    ]
    built = {}
    print('%-36s %-13s %-3s %-5s %7s %7s %8s' % (
        'tokenizer', 'weights q/t/s', 'op', 'stop', 'hit@5', 'MRR@5',
        'ms/query'))
    for tokenize, weights, operator, stop in configs:
        if tokenize not in built:
            path = os.path.join(directory, '%d.db' % len(built))
            db, Doc, DocFTS = build(path, tokenize)
            built[tokenize] = (db, Doc, DocFTS)
        db, Doc, DocFTS = built[tokenize]
        stopwords = ENGLISH_STOPWORDS if stop else ()

        def search(question, course):
            query = (DocFTS.search(question, k=5, weights=list(weights),
                                   operator=operator, stopwords=stopwords)
                     .where(Doc.course == course))
            return [doc.doc_id for doc in query]

        start = time.perf_counter()
        hit, mrr = faq.evaluate(search, questions)
        elapsed = (time.perf_counter() - start) / len(questions) * 1000
        print('%-36s %-13s %-3s %-5s %7.4f %7.4f %8.2f' % (
            tokenize, '/'.join(map(str, weights)), operator,
            'yes' if stop else 'no', hit, mrr, elapsed))
    for db, _, _ in built.values():
        db.close()


def main():
    data = faq.load('dev')
    if data is None:
        print('FAQ data not found (../shared/data/faq); nothing to measure.')
        return
    documents, questions = data
    print('%d documents, %d dev questions, course filter, top 5' % (
        len(documents), len(questions)))
    with tempfile.TemporaryDirectory() as directory:
        run(documents, questions, directory)


if __name__ == '__main__':
    main()
