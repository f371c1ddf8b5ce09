"""
The course FAQ retrieval data set, for quality measurements.

The data comes from the DataTalksClub LLM Zoomcamp course materials
(search-evaluation module): 948 FAQ documents (question, answer text,
section, course) and generated questions, each with the id of the document
that answers it. It has no license, so it is read from ``../shared/data/faq``
(or ``$PLAYHOUSE_VEC_FAQ``) and never copied into this project.
"""
import csv
import json
import os

from peewee import Model
from peewee import TextField

from playhouse_vec import FTSModel
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField


HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, '..', '..', 'shared', 'data', 'faq')


def faq_dir():
    path = os.environ.get('PLAYHOUSE_VEC_FAQ', DEFAULT_DIR)
    if os.path.exists(os.path.join(path, 'documents.json')):
        return path


def load(split='dev'):
    """(documents, questions) or None when the data is not there.

    documents: dicts with id, course, section, question, text.
    questions: (question, course, document id) tuples.
    """
    path = faq_dir()
    if path is None:
        return None
    with open(os.path.join(path, 'documents.json')) as fh:
        documents = json.load(fh)
    with open(os.path.join(path, 'ground-truth-%s.csv' % split)) as fh:
        questions = [(r['question'], r['course'], r['document'])
                     for r in csv.DictReader(fh)]
    return documents, questions


def score(ranked_ids, expected, k=5):
    """(hit@k, MRR@k) contributions of one ranked list."""
    ranked_ids = list(ranked_ids)[:k]
    if expected in ranked_ids:
        return 1.0, 1.0 / (ranked_ids.index(expected) + 1)
    return 0.0, 0.0


def evaluate(search, questions, k=5):
    """hit@k and MRR@k of ``search(question, course) -> [doc ids]``."""
    hits = mrr = 0.0
    for question, course, expected in questions:
        hit, rr = score(search(question, course), expected, k)
        hits += hit
        mrr += rr
    return hits / len(questions), mrr / len(questions)


def declare(db, tokenize=None, embedder=None):
    """(Doc, DocFTS, DocVec) models of the FAQ documents in ``db``; DocVec
    is None without an embedder. The tables are created and filled."""
    class Doc(Model):
        doc_id = TextField()
        course = TextField(index=True)
        section = TextField()
        question = TextField()
        text = TextField()

        class Meta:
            database = db

    class DocFTS(FTSModel):
        question = SearchField()
        text = SearchField()
        section = SearchField()

        class Meta:
            database = db
            content = Doc

    if tokenize:
        DocFTS._meta.tokenize = tokenize
    if embedder is None:
        DocVec = None
    else:
        doc_embedder = embedder

        class DocVec(VecModel):
            embedding = VectorField(embedder.dimensions, metric='cosine')
            course = TextField()

            class Meta:
                database = db
                content = Doc
                embedder = doc_embedder
                embed = lambda d: d.question + '\n' + d.text  # noqa: E731

    db.create_tables([m for m in (Doc, DocFTS, DocVec) if m is not None])
    documents = load()[0]
    if Doc.select().count() != len(documents):
        Doc.delete().execute()
        with db.atomic():
            Doc.insert_many([dict(doc_id=d['id'], course=d['course'],
                                  section=d['section'],
                                  question=d['question'], text=d['text'])
                             for d in documents]).execute()
    return Doc, DocFTS, DocVec
