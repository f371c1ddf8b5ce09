"""
Derived indexes made to match the code at start-up, and the tables
playhouse_vec keeps in the user's database, next to their own.

The content model is the source of truth; vec0 and FTS5 tables are derived
from it and may be rebuilt. ``create_tables(safe=True)`` at start-up is
enough: :class:`DerivedSchemaManager` creates a missing index, and compares
an existing one with the code through a stored fingerprint (embedder,
dimensions, metric, element type, columns, tokenizer). On a mismatch it
raises :class:`SchemaChanged` (``Meta.on_schema_change = 'raise'``, the
default) or drops, recreates and refills the index from the content model
(``'rebuild'``), resuming after a crash. It never modifies the content table
and never uses ``ALTER TABLE ... RENAME`` (it corrupts vec0 tables).

``playhouse_vec_cache``
    embeddings by content hash (text, model, dimensions, task, title), so
    unchanged text is never sent to an embedder twice.
``playhouse_vec_rows``
    for each derived index and content row, the hash of what its vector
    was made from, so ``index()`` knows which rows are stale.
``playhouse_vec_schema``
    for each derived index, its fingerprint (JSON) and whether it is
    ``ready`` or still ``building``.
``playhouse_vec_centers``
    what ``VecModel.train()`` fitted to each vector column: its mean, the
    bit thresholds of ``quantize='bit'``, the centroids of ``lists=N``.

Each database gets its own bound copies of these models
(:func:`library_models`); the tables are created on first use.
"""
import collections
import json
import re
import sys
import threading
import weakref

from peewee import BareField
from peewee import BlobField
from peewee import CompositeKey
from peewee import ImproperlyConfigured
from peewee import IntegerField
from peewee import Metadata
from peewee import Model
from peewee import TextField
from playhouse.sqlite_ext import VirtualTableSchemaManager

from playhouse_vec.database import atomic
from playhouse_vec.database import resolved
from playhouse_vec.database import reclaim_space
from playhouse_vec.database import register_database


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


class IndexSchema(Model):
    index = TextField(primary_key=True)
    fingerprint = TextField()   # JSON
    status = TextField()        # 'ready' or 'building'

    class Meta:
        table_name = 'playhouse_vec_schema'


class VectorCenter(Model):
    index = TextField()
    field = TextField()
    # float32: a mean, thresholds or centroids (VecModel.train).
    vector = BlobField()

    class Meta:
        table_name = 'playhouse_vec_centers'
        primary_key = CompositeKey('index', 'field')


LIBRARY_MODELS = (EmbeddingCache, IndexedRow, IndexSchema, VectorCenter)
LibraryModels = collections.namedtuple('LibraryModels',
                                       'cache rows schema centers')
_bound = weakref.WeakKeyDictionary()
_checked = weakref.WeakKeyDictionary()     # Connections seen at the check.
_lock = threading.Lock()


def library_models(database):
    """The library's models (cache, rows, schema, centers) bound to
    ``database``, their tables created (again after a new connection,
    which may be to another file)."""
    database = resolved(database)
    with _lock:
        models = _bound.get(database)
        if models is None:
            models = _bound[database] = LibraryModels(*(
                type(model.__name__, (model,), {
                    'Meta': type('Meta', (), {
                        'database': database,
                        'table_name': model._meta.table_name}),
                    '__module__': __name__})
                for model in LIBRARY_MODELS))
        connections = getattr(database, '_vec_connections', 0)
        if _checked.get(database) != connections:
            # Read first: creating takes the write lock, which a search
            # should not wait for.
            tables = set(database.get_tables())
            missing = [m for m in models
                       if m._meta.table_name not in tables]
            if missing:
                with atomic(database):  # Done before the first read.
                    database.create_tables(missing, safe=True)
            _checked[database] = getattr(database, '_vec_connections', 0)
    return models


class DerivedMetadata(Metadata):
    """Metadata of a derived index. Binding the model to a database
    (``db.bind([...])``, ``bind_ctx``) registers that database, with the
    recursive triggers a content model's sync triggers need."""
    def set_database(self, database):
        super(DerivedMetadata, self).set_database(database)
        register_database(database, recursive_triggers=getattr(
            self, 'content', None) is not None)


class SchemaChanged(ImproperlyConfigured):
    """A derived index was built with settings the code no longer has."""


POLICIES = ('raise', 'rebuild')
IGNORED_KEYS = ('library',)     # Informational: upgrades need no rebuild.
# Keys later versions added: compared only with fingerprints that have them.
ADDED_KEYS = ('content',)


def _flatten(value, prefix=''):
    if isinstance(value, dict):
        items = {}
        for key, inner in value.items():
            items.update(_flatten(inner, '%s%s.' % (prefix, key)))
        return items
    return {prefix.rstrip('.'): value}


def fingerprint_changes(stored, current):
    """[(key, stored value, current value)] for the keys that differ."""
    old, new = _flatten(stored), _flatten(current)
    changes = [(key, old.get(key), new.get(key))
               for key in sorted(set(old) | set(new))
               if key.split('.')[0] not in IGNORED_KEYS and
               (key in old or key not in ADDED_KEYS) and
               old.get(key) != new.get(key)]
    if new.get('kind') == 'vec0' and \
            _vec0_columns(old.get('ddl')) == _vec0_columns(new.get('ddl')):
        # Fields declared in another order: vec0 reads columns by name
        # (FTS5 does not: bm25 weights and snippets go by position).
        changes = [c for c in changes if c[0] != 'ddl']
    # The DDL differs whenever a column or option does; show it only when
    # nothing more readable explains the change.
    readable = [c for c in changes if c[0] != 'ddl']
    return readable or changes


def _vec0_columns(sql):
    """The column and option definitions of vec0 DDL, in any order."""
    inside = (sql or '')[(sql or '').find('(') + 1:(sql or '').rfind(')')]
    return sorted(' '.join(part.lower().replace('"', '').split())
                  for part in inside.split(','))


class DerivedSchemaManager(VirtualTableSchemaManager):
    """
    Creates a derived index, or checks it against the code at start-up.

    The model provides ``fingerprint()``, ``_fill_index()`` (refill from
    the content model), ``_fill_on_create`` and ``_sync_triggers()`` /
    ``_sync_trigger_names()``; optionally ``_rebuild_in_place(changes)``
    (True when it rebuilt the index from its own rows).
    """
    def create_table(self, safe=True, **options):
        model = self.model
        database = model._meta.database
        content = model._meta.content
        if content is not None:
            content.create_table(safe=True)
        Schema = library_models(database).schema
        name = model._meta.table_name
        current = model.fingerprint()
        if not model.table_exists():
            with atomic(database):
                super(DerivedSchemaManager, self).create_table(safe,
                                                               **options)
                self._record(Schema, current, 'building')
                self._triggers()
            self._fill(Schema, current, model._fill_on_create)
            return
        stored = Schema.get_or_none(Schema.index == name)
        if stored is None:
            # Built before fingerprints were kept (or by hand): all that
            # can be compared is the DDL SQLite stored.
            old = dict(current, ddl=self._stored_ddl())
            if _same_sql(old['ddl'], current['ddl']):
                self._record(Schema, current, 'ready')
                old = current
        else:
            old = json.loads(stored.fingerprint)
        changes = fingerprint_changes(old, current)
        if changes:
            ready = stored is None or stored.status == 'ready'
            # Without a stored fingerprint the old settings are unknown:
            # the rows cannot be trusted to fit the new table.
            self._changed(Schema, current, changes, ready,
                          in_place=stored is not None)
        elif stored is not None and stored.status == 'building':
            self._triggers()
            self._fill(Schema, current, True)   # Resume an interrupted run.
        self._triggers()

    def _changed(self, Schema, current, changes, ready=True, in_place=True):
        model = self.model
        policy = model._meta.on_schema_change
        if policy not in POLICIES:
            raise ImproperlyConfigured(
                '%s.Meta.on_schema_change must be %s, got %r.' % (
                    model.__name__, ' or '.join(map(repr, POLICIES)), policy))
        described = '; '.join('%s: %s -> %s' % change for change in changes)
        if policy == 'raise':
            raise SchemaChanged(
                '%s (table %s) was built with other settings than the code '
                'now has (%s). Set %s.Meta.on_schema_change = "rebuild" to '
                'drop it and rebuild it from %s, or restore the old '
                'settings.' % (model.__name__, model._meta.table_name,
                               described, model.__name__,
                               getattr(model._meta.content, '__name__',
                                       'its content')))
        database = model._meta.database
        rebuild_in_place = getattr(model, '_rebuild_in_place', None)
        if rebuild_in_place is not None and in_place:
            with atomic(database):
                rebuilt = rebuild_in_place(changes)
                if rebuilt:
                    self._drop_triggers()   # Made again for the new code.
                    self._triggers()
                    self._record(Schema, current,
                                 'ready' if ready else 'building')
            if rebuilt:
                reclaim_space(database)     # Free the old rows' pages.
                if not ready:
                    self._fill(Schema, current, True)
                return
        model._check_can_fill()
        with atomic(database):
            # Drop and create in one transaction: a crash leaves the old
            # index and fingerprint, and the next start-up starts over.
            database.execute_sql(self._drop_table(safe=True).query()[0])
            self._drop_triggers()
            super(DerivedSchemaManager, self).create_table(True)
            # Triggers first: rows deleted while it refills lose their
            # entries as usual.
            self._triggers()
            self._forget_rows()
            self._record(Schema, current, 'building')
        self._fill(Schema, current, True)

    def _forget_rows(self):
        Rows = library_models(self.model._meta.database).rows
        Rows.delete().where(Rows.index == self.model._meta.table_name
                            ).execute()
        training = getattr(self.model, '_training', None)
        if training is not None:
            training.forget()

    def _fill(self, Schema, current, fill):
        if fill:
            self.model._fill_index()
        self._record(Schema, current, 'ready')

    def _record(self, Schema, current, status):
        (Schema
         .insert(index=self.model._meta.table_name,
                 fingerprint=json.dumps(current, sort_keys=True),
                 status=status)
         .on_conflict_replace()
         .execute())

    def _stored_ddl(self):
        row = self.model._meta.database.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND "
            "name = ?", (self.model._meta.table_name,)).fetchone()
        return row[0] if row else None

    def _triggers(self):
        if self.model._meta.content is not None:
            self.model._sync_triggers()

    def _drop_triggers(self):
        from playhouse_vec.sync import drop_triggers
        drop_triggers(self.model._meta.database,
                      self.model._sync_trigger_names())

    def drop_table(self, safe=True, **options):
        model = self.model
        database = model._meta.database
        self._drop_triggers()
        super(DerivedSchemaManager, self).drop_table(safe, **options)
        Schema = library_models(database).schema
        Schema.delete().where(Schema.index ==
                              model._meta.table_name).execute()
        self._forget_rows()


def _same_sql(a, b):
    def normal(sql):
        return ' '.join((sql or '').lower().replace('"', '').split())
    return normal(a) == normal(b)


# A name SQLite takes without quotes (vec0 takes no other).
IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def check_content(model):
    """Raise ImproperlyConfigured unless ``model``'s ``Meta.content`` can
    carry its sync triggers: one key column, and both tables in the main
    database (SQLite triggers cannot reach into an attached one)."""
    content = model._meta.content
    key = content._meta.primary_key
    if not key or isinstance(key, CompositeKey):
        raise ImproperlyConfigured(
            '%s needs a single-column primary key on its content model %s '
            '(its rows are keyed by it); %s has %s.' % (
                model.__name__, content.__name__, content.__name__,
                'a composite key' if key else 'none'))
    for m in (model, content):
        if m._meta.schema:
            raise ImproperlyConfigured(
                '%s is in the attached database %r: an index and its content '
                'model must both be in the main database, where their sync '
                'triggers can reach each other. Remove Meta.schema, or open '
                'that file as its own database.' % (m.__name__,
                                                    m._meta.schema))


def has_integer_key(model):
    """Whether a content model's primary key is an integer (a rowid)."""
    key = model._meta.primary_key
    return isinstance(getattr(key, 'rel_field', key), IntegerField)


def ddl_of(model):
    """The CREATE statement SQLite stores for a derived table."""
    return model._schema._create_table(safe=False).query()[0]


def library_version():
    from playhouse_vec import __version__
    return __version__


def progress_for(model):
    """A progress reporter for start-up rebuilds (Meta.progress)."""
    progress = getattr(model._meta, 'progress', True)
    if progress is True:
        from playhouse_vec.indexing import ProgressBar
        return ProgressBar('Rebuilding %s' % model._meta.table_name,
                           sys.stderr)
    return progress or None
