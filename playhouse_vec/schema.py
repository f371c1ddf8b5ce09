"""
Tables playhouse_vec keeps in the user's database, next to their own.

``playhouse_vec_cache``
    embeddings by content hash (text, model, dimensions, task, title), so
    unchanged text is never sent to an embedder twice.
``playhouse_vec_rows``
    for each derived index and content row, the hash of what its vector
    was made from, so ``index()`` knows which rows are stale.

Each database gets its own bound copies of these models
(:func:`library_models`); the tables are created on first use.
"""
import threading
import weakref

from peewee import BareField
from peewee import BlobField
from peewee import CompositeKey
from peewee import Model
from peewee import TextField


class EmbeddingCache(Model):
    key = TextField(primary_key=True)
    vector = BlobField()

    class Meta:
        table_name = 'playhouse_vec_cache'


class IndexedRow(Model):
    index = TextField()        # The derived table's name.
    row = BareField()          # The content row's primary key.
    state = TextField()        # Hash of the text, title and metadata.

    class Meta:
        table_name = 'playhouse_vec_rows'
        primary_key = CompositeKey('index', 'row')


LIBRARY_MODELS = (EmbeddingCache, IndexedRow)
_bound = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def library_models(database):
    """(EmbeddingCache, IndexedRow) bound to ``database``, tables made."""
    with _lock:
        models = _bound.get(database)
        if models is None:
            models = tuple(
                type(model.__name__, (model,), {
                    'Meta': type('Meta', (), {
                        'database': database,
                        'table_name': model._meta.table_name}),
                    '__module__': __name__})
                for model in LIBRARY_MODELS)
            database.create_tables(models, safe=True)
            _bound[database] = models
    return models
