"""
Vector search on Peewee models with playhouse_vec, offline and without a key.

A content model (Note) holds the text; a VecModel (NoteVec) holds one vector
per note in a sqlite-vec vec0 table that shares the note's id as rowid.

The vectors here are synthetic: each topic has a random direction and each
note is that direction plus noise, so notes of a topic sit close together.
Real embeddings come from an embedder (see the README).

    python examples/knn_demo.py [path/to/notes.db]
"""
import os
import sys
import tempfile

import numpy as np
from peewee import Model
from peewee import SqliteDatabase
from peewee import TextField

from playhouse_vec import VecModel
from playhouse_vec import VectorField


db = SqliteDatabase(None)


class Note(Model):
    title = TextField()
    course = TextField()

    class Meta:
        database = db


class NoteVec(VecModel):
    embedding = VectorField(64, metric='cosine')
    topic = TextField()                   # metadata: filterable in the KNN

    class Meta:
        database = db
        content = Note                    # rowid = Note.id


TOPICS = {
    'install': ['Installing peewee with pip', 'Setting up a virtualenv',
                'Upgrading sqlite-vec', 'Python version requirements'],
    'queries': ['Filtering rows with where()', 'Joining two models',
                'Paging results with limit and offset', 'Counting rows'],
    'vectors': ['What cosine distance means', 'Choosing vector dimensions',
                'Nearest-neighbour search in SQLite', 'Quantizing vectors'],
}


def build(path):
    db.init(path)
    db.create_tables([Note, NoteVec])      # idempotent: every start-up
    if Note.select().exists():
        return
    rng = np.random.default_rng(42)
    with db.atomic():
        for topic, titles in TOPICS.items():
            direction = rng.normal(size=64)
            for i, title in enumerate(titles):
                course = ('ml', 'de')[i % 2]
                note = Note.create(title=title, course=course)
                vector = direction + 0.6 * rng.normal(size=64)
                NoteVec.create(rowid=note.id, embedding=vector, topic=topic)


def show(label, rows):
    print(label)
    for row in rows:
        note = Note.get_by_id(row.rowid)
        print('  %.3f  [%s/%s] %s' % (max(row.distance, 0.0), row.topic,
                                      note.course, note.title))


def main():
    tmp = None
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, 'notes.db')
    build(path)

    # A query vector near the "vectors" topic: the vector of one note.
    query = NoteVec.get(NoteVec.topic == 'vectors').embedding

    show('3 nearest notes:', NoteVec.knn(query, k=3))
    show('3 nearest notes in course "de" (filter on the content model, '
         'applied before the top-k):',
         NoteVec.knn(query, k=3).where(Note.course == 'de'))
    show('3 nearest about "install" (metadata filter inside the KNN):',
         NoteVec.knn(query, k=3).where(NoteVec.topic == 'install'))
    show('Page 2 of the 6 nearest, 3 per page:',
         NoteVec.knn(query, k=6).paginate(2, 3))

    # Exact search in plain SQL with a distance expression, no vec0 needed.
    nearest = (NoteVec
               .select(NoteVec.rowid,
                       NoteVec.embedding.cosine_distance(query).alias('d'))
               .order_by(NoteVec.embedding.cosine_distance(query))
               .limit(3)
               .tuples())
    assert [r[0] for r in nearest] == [r.rowid for r in
                                       NoteVec.knn(query, k=3)]
    print('Exact search agrees with the KNN index.')
    db.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == '__main__':
    main()
