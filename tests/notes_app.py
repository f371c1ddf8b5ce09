"""
A small notes application (content, FTS5 and vector index) for the crash
and stress tests. As a program it adds content and indexes it, as an
application would at start-up; the crash test kills it. Run as:

    python notes_app.py DB_PATH ROWS MODEL [--slow]

MODEL names the embedding model ('hash-v1', 'hash-v2'); changing it makes
the next start-up rebuild the vector index (on_schema_change='rebuild').
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peewee import Model  # noqa: E402
from peewee import SqliteDatabase  # noqa: E402
from peewee import TextField  # noqa: E402

from playhouse_vec import FTSModel  # noqa: E402
from playhouse_vec import FunctionEmbedder  # noqa: E402
from playhouse_vec import SearchField  # noqa: E402
from playhouse_vec import VecModel  # noqa: E402
from playhouse_vec import VectorField  # noqa: E402

from conftest import hashed_vectors  # noqa: E402

DIMS = 16


def app(path, model, slow=False):
    db = SqliteDatabase(path)

    def embed_texts(texts):
        if slow:
            time.sleep(0.03)
        return hashed_vectors(['%s|%s' % (model, t) for t in texts], DIMS)

    class Note(Model):
        title = TextField()

        class Meta:
            database = db

    class NoteFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = db
            content = Note

    class NoteVec(VecModel):
        embedding = VectorField(DIMS, metric='cosine')

        class Meta:
            database = db
            content = Note
            embedder = FunctionEmbedder(embed_texts, DIMS, model=model)
            embed = 'title'
            on_schema_change = 'rebuild'
            progress = None
            batch_size = 10

    return db, Note, NoteFTS, NoteVec


def title(i):
    return 'note %d about subject %d' % (i, i % 37)


def main():
    path, rows, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    db, Note, NoteFTS, NoteVec = app(path, model, '--slow' in sys.argv)
    db.create_tables([Note, NoteFTS, NoteVec])   # may rebuild, resumably
    have = Note.select().count()
    for start in range(have, rows, 25):          # content, in transactions
        with db.atomic():
            Note.insert_many([{'id': i + 1, 'title': title(i)}
                              for i in range(start, min(rows, start + 25))]
                             ).execute()
    NoteVec.index()
    print('done')


if __name__ == '__main__':
    main()
