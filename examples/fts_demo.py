"""
Full-text search over a Peewee model with an FTS5 index that follows it.

    python examples/fts_demo.py
"""
from peewee import Model
from peewee import SqliteDatabase
from peewee import TextField

from playhouse_vec import FTSModel
from playhouse_vec import SearchField


db = SqliteDatabase(':memory:')


class Note(Model):
    title = TextField()
    body = TextField()
    course = TextField()

    class Meta:
        database = db


class NoteFTS(FTSModel):                  # an FTS5 table, external content
    title = SearchField()
    body = SearchField()

    class Meta:
        database = db
        content = Note                    # text is stored once, in Note


NOTES = [
    ('Installing peewee', 'Run pip install peewee in a virtualenv.', 'ml'),
    ('Installing sqlite-vec', 'pip install sqlite-vec brings the vec0 '
     'extension as a wheel.', 'ml'),
    ('Upgrading packages', 'Use pip install --upgrade to get new '
     'releases; pin versions in requirements.txt.', 'de'),
    ('Joins', 'Join Note to Tag with .join(); filters go in .where().',
     'de'),
    ('C++ extensions', 'Building C++ extensions needs a compiler.', 'de'),
    ('Transactions', 'Wrap several writes in db.atomic().', 'ml'),
    ('Indexes', 'Add an index on columns you filter by often.', 'de'),
    ('Paging', 'Use .paginate(page, per_page) for pages of results.', 'ml'),
    ('Counting', 'Call .count() on a query to count its rows.', 'de'),
    ('Vector search', 'Nearest neighbours with sqlite-vec and knn().', 'ml'),
    ('Cosine distance', 'One minus the cosine similarity of two vectors.',
     'ml'),
    ('Backups', 'Copy the database file while no transaction is open.',
     'de'),
    ('WAL mode', 'Readers do not block the writer in WAL journal mode.',
     'de'),
]


def main():
    db.create_tables([Note, NoteFTS])     # also installs the sync triggers
    for title, body, course in NOTES:
        Note.create(title=title, body=body, course=course)

    print('Search box input, titles weighted 3x:')
    for note in NoteFTS.search('how do I install it?', k=3,
                               weights={'title': 3.0}, snippet=True):
        print('  %.2f  %-24s %s' % (note.score, note.title, note.snippet))

    print('Only course "de" (filtered before the top-k):')
    for note in NoteFTS.search('install', k=3).where(Note.course == 'de'):
        print('  %.2f  %s' % (note.score, note.title))

    print('Typed punctuation is never FTS5 syntax:',
          [n.title for n in NoteFTS.search('C++ "unbalanced NEAR(')])
    print('Power users write FTS5 queries:',
          [n.title for n in NoteFTS.search_raw('title:instal* NOT vec')])

    # The index follows every write, raw SQL included.
    db.execute_sql("update note set body = 'nothing left' where id = 1")
    Note.delete().where(Note.title == 'Joins').execute()
    print('After an UPDATE and a DELETE:', NoteFTS.check_index())


if __name__ == '__main__':
    main()
