"""
VecModel: a Peewee model backed by a sqlite-vec ``vec0`` virtual table.

::

    class NoteVec(VecModel):
        embedding = VectorField(768, metric='cosine')
        course = TextField()                  # metadata, filterable in KNN
        user_id = IntegerField()              # partition key (see Meta)
        title = TextField()                   # auxiliary (see Meta)

        class Meta:
            database = db
            content = Note                    # rowid = Note.id
            partition_keys = ('user_id',)
            auxiliary_columns = ('title',)

    db.create_tables([NoteVec])
    NoteVec.insert(rowid=1, embedding=v, course='ml', user_id=1,
                   title='Intro').execute()
    for row in NoteVec.knn(q, k=10).where(NoteVec.course == 'ml'):
        print(row.rowid, row.distance)
"""
import numbers
import operator
from functools import reduce

import numpy as np
from peewee import Case
from peewee import EnclosedNodeList
from peewee import Entity
from peewee import Field
from peewee import FloatField
from peewee import ImproperlyConfigured
from peewee import IntegrityError
from peewee import IntegerField
from peewee import Model
from peewee import ModelInsert
from peewee import ModelUpdate
from peewee import Node
from peewee import OperationalError
from peewee import NodeList
from peewee import SQL
from peewee import Table
from peewee import VirtualField
from peewee import _StringField
from peewee import __exception_wrapper__
from peewee import fn
from playhouse.sqlite_ext import RowIDField
from playhouse.sqlite_ext import VirtualModel

from playhouse_vec.database import atomic
from playhouse_vec.database import key_chunks
from playhouse_vec.database import register_database
from playhouse_vec.database import reclaim_space
from playhouse_vec.embeddings import is_blank
from playhouse_vec.fields import PackedVector
from playhouse_vec.fields import VectorField
from playhouse_vec.indexing import Indexer
from playhouse_vec.query import KNNSelect
from playhouse_vec.schema import IDENTIFIER
from playhouse_vec.schema import DerivedMetadata
from playhouse_vec.schema import DerivedSchemaManager
from playhouse_vec.schema import SchemaChanged
from playhouse_vec.schema import check_content
from playhouse_vec.schema import ddl_of
from playhouse_vec.schema import library_version
from playhouse_vec.schema import progress_for
from playhouse_vec.sync import compare_keys
from playhouse_vec.sync import install_vec_triggers
from playhouse_vec.sync import vec_trigger_names
from playhouse_vec.training import Training


RESERVED = ('distance', 'k', 'rowid')
COLUMN_TYPES = {
    'integer': ('INT', 'INTEGER', 'BIGINT', 'SMALLINT', 'AUTO', 'BIGAUTO'),
    'float': ('FLOAT', 'DOUBLE', 'REAL'),
    'boolean': ('BOOL', 'BOOLEAN'),
    'text': ('TEXT', 'VARCHAR', 'CHAR'),
    'blob': ('BLOB',),
}
ALLOWED_TYPES = {
    'primary key': ('integer', 'text'),
    'metadata': ('integer', 'float', 'boolean', 'text'),
    'partition key': ('integer', 'text'),
    'auxiliary': ('integer', 'float', 'text', 'blob'),
}
LIMITS = {'vector': 16, 'metadata': 16, 'auxiliary': 16, 'partition key': 4}
# Peewee's own conversions of integer, float and text values, which leave
# such values as they are.
NATIVE_ADAPT = {'integer': IntegerField.adapt, 'float': FloatField.adapt,
                'text': _StringField.adapt}
# Vector options a table can be rebuilt for from its own rows.
REINDEXED = ('metric', 'quantize', 'bits', 'lists')


class VecColumn(object):
    """One column of a vec0 table: its field, role and vec0 type."""
    def __init__(self, field, role, vtype=None):
        self.field = field
        self.role = role
        self.vtype = vtype

    def ddl(self):
        name = self.field.column_name
        if self.role == 'vector':
            field = self.field
            parts = ['%s %s[%d]' % (name, field.storage.name.replace(
                'float32', 'float'), field.dimensions)]
            if field.storage.name != 'bit':
                parts.append('distance_metric=%s' % field.metric)
            return ' '.join(parts)
        elif self.role == 'auxiliary':
            return '+%s %s' % (name, self.vtype)
        elif self.role == 'metadata':
            return '%s %s' % (name, self.vtype)
        return '%s %s %s' % (name, self.vtype, self.role)

    def check(self, value):
        """Raise ValueError if ``value`` cannot be written to this column."""
        field = self.field
        if isinstance(value, Node):
            return value
        if self.role == 'vector':
            if value is None:
                raise ValueError('%s.%s is a vector column and cannot be '
                                 'NULL.' % (field.model.__name__, field.name))
            return field.pack(value)
        # What is written is the field's db_value() (a field may store a
        # datetime as an integer, say); the value itself is returned, for
        # Peewee to convert once on the way.
        try:
            stored = None if value is None else field.db_value(value)
        except (TypeError, ValueError) as exc:
            raise ValueError('%s.%s cannot store %r (%s): %s.' % (
                field.model.__name__, field.name, value,
                type(value).__name__, exc))
        if stored is None:
            if self.nullable:
                return value
            raise ValueError(
                '%s.%s is a %s column of a vec0 table and cannot be NULL '
                '(sqlite-vec rejects NULL there); give every row a value.'
                % (field.model.__name__, field.name, self.role))
        if self.vtype and not TYPE_CHECKS[self.vtype](stored):
            raise ValueError('%s.%s expects %s, got %r (%s)%s.' % (
                field.model.__name__, field.name, TYPE_NAMES[self.vtype],
                value, type(value).__name__, '' if stored is value else
                ', stored as %r' % (stored,)))
        return value

    @property
    def nullable(self):
        """Whether NULL may be written, or the column left out (an integer
        key is then chosen)."""
        return self.role in ('auxiliary', 'rowid') or (
            self.role == 'primary key' and self.vtype == 'integer')

    def converted(self, value):
        """SQL for ``value`` (a stored value) in this column's type, NULL
        where the conversion would lose information (``'7'`` becomes 7,
        ``'x'`` or 2.5 NULL for an integer column)."""
        kind = fn.typeof(value)
        if self.vtype in ('integer', 'boolean'):
            number = value.cast('INTEGER')
            converted = Case(None, (
                (kind == 'integer', value),
                ((kind == 'real') & (value == number), number),
                ((kind == 'text') & (number.cast('TEXT') == value), number)))
            if self.vtype == 'boolean':
                converted = Case(None, ((converted.in_((0, 1)), converted),))
            return converted
        if self.vtype == 'float':
            number = value.cast('NUMERIC')
            return Case(None, (
                (kind.in_(('integer', 'real')), value.cast('REAL')),
                ((kind == 'text') & (fn.typeof(number) != 'text') &
                 (number.cast('TEXT') == value), number.cast('REAL'))))
        if self.vtype == 'text':
            return Case(None, ((kind.in_(('text', 'integer', 'real')),
                                value.cast('TEXT')),))
        return value

    def lost(self, value):
        """SQL true where :meth:`converted` cannot keep ``value``."""
        if self.nullable:
            return self.converted(value).is_null() & value.is_null(False)
        return self.converted(value).is_null()


def _is_boolean(value):
    return isinstance(value, (bool, np.bool_)) or (
        isinstance(value, numbers.Integral) and value in (0, 1))


TYPE_CHECKS = {
    'integer': lambda v: type(v) is int or isinstance(v, numbers.Integral),
    'float': lambda v: isinstance(v, numbers.Real) and not isinstance(
        v, (bool, np.bool_)) and np.isfinite(v),
    'boolean': _is_boolean,
    'text': lambda v: isinstance(v, str),
    'blob': lambda v: isinstance(v, (bytes, bytearray, memoryview)),
}
TYPE_NAMES = {'integer': 'an integer', 'float': 'a finite number',
              'boolean': 'a boolean', 'text': 'a string',
              'blob': 'bytes'}


class VecTable(object):
    """The vec0 layout of a VecModel, validated once at class creation."""
    def __init__(self, model):
        self.model = model
        meta = model._meta
        name = model.__name__
        self.columns = {}
        self.plain_sql = {}   # KNNSelect's compiled plain searches.
        # quantize='bit': each float vector's binary companion column;
        # lists=N: each float vector's inverted list, a partition key.
        self.companions = dict(
            (f, meta.fields[f.name + '_bits']) for f in meta.sorted_fields
            if getattr(f, 'quantize', None) == 'bit')
        self.lists = dict(
            (f, meta.fields[f.name + '_list']) for f in meta.sorted_fields
            if getattr(f, 'lists', None))
        self.hidden = set(self.companions.values()) | set(self.lists.values())
        partition_keys = tuple(getattr(meta, 'partition_keys', None) or ())
        partition_keys += tuple(f.name for f in self.lists.values())
        # Whether vec0 fails a multi-row UPDATE (see VecUpdate).
        self.update_by_key = bool(self.hidden or partition_keys or any(
            getattr(f, 'storage', None) is not None and
            f.storage.name != 'float32' for f in meta.sorted_fields))
        auxiliary = tuple(getattr(meta, 'auxiliary_columns', None) or ())
        for option, names in (('partition_keys', partition_keys),
                              ('auxiliary_columns', auxiliary)):
            for field_name in names:
                if field_name not in meta.fields:
                    raise ImproperlyConfigured(
                        '%s.Meta.%s names %r, which is not a field of %s.'
                        % (name, option, field_name, name))
        counts = {}
        for field in meta.sorted_fields:
            if isinstance(field, RowIDField):
                self.columns[field] = VecColumn(field, 'rowid', 'integer')
                continue
            column = field.column_name
            if not IDENTIFIER.match(column):
                raise ImproperlyConfigured(
                    '%s.%s: vec0 needs bare column names (letters, digits '
                    'and underscores, not starting with a digit); rename '
                    'column %r.' % (name, field.name, column))
            if column.lower() in RESERVED:
                raise ImproperlyConfigured(
                    '%s.%s: %r is reserved in vec0 tables (a hidden column); '
                    'choose another name.' % (name, field.name, column))
            if (field.index or field.unique) and not field.primary_key:
                raise ImproperlyConfigured(
                    '%s.%s asks for an index, which virtual tables cannot '
                    'have; declare it with index=False%s (vec0 filters '
                    'metadata columns itself).' % (
                        name, field.name,
                        ', unique=False' if field.unique else ''))
            if isinstance(field, VectorField):
                role = 'vector'
            elif field.primary_key:
                role = 'primary key'
            elif field.name in partition_keys:
                role = 'partition key'
            elif field.name in auxiliary:
                role = 'auxiliary'
            else:
                role = 'metadata'
            vtype = None
            if role != 'vector':
                vtype = self._vec0_type(field, role)
            if role == 'metadata' and field.null:
                raise ImproperlyConfigured(
                    '%s.%s: vec0 metadata columns cannot hold NULL; drop '
                    'null=True, or list it in Meta.auxiliary_columns (not '
                    'filterable in KNN).' % (name, field.name))
            counts[role] = counts.get(role, 0) + 1
            self.columns[field] = VecColumn(field, role, vtype)
        for role, limit in LIMITS.items():
            if counts.get(role, 0) > limit:
                raise ImproperlyConfigured(
                    '%s has %d %s columns; vec0 allows at most %d.' % (
                        name, counts[role], role, limit))
        self.vectors = [c.field for c in self.columns.values()
                        if c.role == 'vector' and c.field not in self.hidden]
        # What a KNN search returns by default.
        self.selected = [f for f in meta.sorted_fields
                         if f not in self.hidden] + [model.distance]
        # Vector columns whose hidden columns depend on train().
        self.trained = [f for f in self.vectors if self.hidden_of(f)]
        self.chunk_size = self._chunk_size(getattr(meta, 'chunk_size', None))

    def native(self, field):
        """Whether the values vec0 returns for ``field`` are already what
        its ``python_value`` would make of them: vec0 types its rowid,
        distance and metadata columns strictly, and Peewee's own integer,
        float and text fields leave such values as they are."""
        if field is self.model.distance:
            vtype, field = 'float', field.field_instance
        else:
            column = self.columns.get(field)
            if column is None or column.role not in ('rowid', 'metadata'):
                return False
            vtype = column.vtype
        cls = type(field)
        return cls.python_value is Field.python_value and \
            getattr(cls, 'adapt', None) is NATIVE_ADAPT.get(vtype, False)

    def _vec0_type(self, field, role):
        for vtype, field_types in COLUMN_TYPES.items():
            if str(field.field_type).upper() in field_types:
                if vtype in ALLOWED_TYPES[role]:
                    return vtype
                break
        raise ImproperlyConfigured(
            '%s.%s (%s) cannot be a vec0 %s column; allowed types: %s.' % (
                self.model.__name__, field.name, type(field).__name__, role,
                ', '.join(ALLOWED_TYPES[role])))

    def _chunk_size(self, chunk_size):
        if chunk_size is None:
            # Each insert rewrites part of a chunk_size x vector-bytes BLOB;
            # keep that near 1 MiB so inserts stay fast (4x at 768-d).
            largest = max(f.storage.nbytes(f.dimensions)
                          for f in self.vectors)
            chunk_size = 1024
            while chunk_size > 64 and chunk_size * largest > 1 << 20:
                chunk_size //= 2
            if self.lists:
                # Each list (partition) has chunks of its own; keep them
                # small, or a search reads mostly empty chunk space.
                chunk_size = min(chunk_size, 128)
            return chunk_size
        if not isinstance(chunk_size, numbers.Integral) or chunk_size <= 0 \
                or chunk_size % 8 or chunk_size > 4096:
            raise ImproperlyConfigured(
                '%s.Meta.chunk_size must be a positive multiple of 8 up to '
                '4096, got %r.' % (self.model.__name__, chunk_size))
        return int(chunk_size)

    def ddl(self):
        columns = [c.ddl() for c in self.columns.values() if c.role != 'rowid']
        columns.append('chunk_size=%d' % self.chunk_size)
        return ', '.join(columns)

    def vector_field(self, field=None):
        """The vector column a search reads: ``field``, or the only one."""
        if field is None and len(self.vectors) == 1:
            return self.vectors[0]
        if field is not None and self.role(field) == 'vector':
            return field
        name = self.model.__name__
        choices = ' or '.join('%s.%s' % (name, f.name) for f in self.vectors)
        if field is None:
            raise ValueError('%s has several vector columns; pass the one to '
                             'search as field=: %s.' % (name, choices))
        raise ValueError('field must be a vector column of %s (%s); got %r.'
                         % (name, choices, field))

    def role(self, field):
        column = self.columns.get(field)
        return column.role if column else None

    def hidden_of(self, field):
        """The hidden columns derived from a vector column."""
        return [h for h in (self.companions.get(field),
                            self.lists.get(field)) if h is not None]

    def derive(self, rows):
        """Fill the hidden columns of checked rows (packed vectors): sign
        bits for ``quantize='bit'``, the inverted list for ``lists=N``."""
        model = self.model
        for field in self.trained:
            todo = [row for row in rows
                    if type(row.get(field)) is PackedVector]
            if not todo:
                continue
            matrix = field.stored_matrix([row[field] for row in todo])
            for hidden, values in model._training.derived(field, matrix):
                for row, value in zip(todo, values):
                    row[hidden] = value

    def check_rows(self, rows):
        """Validate INSERT rows, given as (fields, values) pairs where rows
        of one shape share one tuple of fields; return them as {field:
        value} dicts with defaults and hidden columns filled. The vectors
        of each shape are checked in one pass per column."""
        shapes = {}
        for fields, values in rows:
            shape = shapes.get(id(fields))
            if shape is None:
                shape = shapes[id(fields)] = (fields,) + self._shape(fields)
            shape[3].append(values)
        for fields, _, _, group in shapes.values():
            for i, field in enumerate(fields):
                if not isinstance(field, VectorField):
                    continue
                given = [values for values in group
                         if type(values[i]) is np.ndarray]
                for values, packed in zip(given, field.pack_many(
                        [values[i] for values in given])):
                    values[i] = packed
        checked = []
        for fields, values in rows:
            _, columns, defaults, _ = shapes[id(fields)]
            row = dict(zip(fields, [column.check(value) for column, value
                                    in zip(columns, values)]))
            for field, column, default in defaults:
                row[field] = column.check(default() if callable(default)
                                          else default)
            checked.append(row)
        self.derive(checked)
        for row in checked:
            self._check_derived(row, self.hidden)
        return checked

    def _shape(self, fields):
        """(the columns of ``fields``, the defaults of the columns they
        leave out, [] for the rows of this shape); raises if they leave
        out one that rows need."""
        given = set(fields)
        defaults = []
        for field, column in self.columns.items():
            if field in given:
                continue
            if field.default is not None:
                defaults.append((field, column, field.default))
            elif field not in self.hidden and not column.nullable:
                raise ValueError(
                    'Missing value for %s.%s: every row of a vec0 table '
                    'needs its %s column.' % (self.model.__name__,
                                              field.name, column.role))
        return [self.columns[field] for field in fields], defaults, []

    def _check_derived(self, row, hidden):
        for field in hidden:
            if field not in row:
                raise ValueError(
                    'Cannot derive %s.%s from a vector given as SQL; pass '
                    'the vector as a value.' % (self.model.__name__,
                                                field.name))

    def check_update(self, data):
        """Validate the data of an UPDATE. Returns whether the rows must be
        replaced instead (vec0 cannot UPDATE int8/bit vectors or partition
        keys; hidden columns of a changed vector are among them)."""
        for field, value in data.items():
            column = self.columns[field]
            if column.role in ('rowid', 'primary key', 'partition key') \
                    and field not in self.hidden:
                raise ValueError(
                    'vec0 cannot UPDATE %s.%s (a %s). Replace the row '
                    'instead: set the value on the instance and call save(), '
                    'or use %s.replace(...).' % (
                        self.model.__name__, field.name, column.role,
                        self.model.__name__))
            data[field] = column.check(value)
        self.derive([data])
        computed = False    # SQL for a vector with derived columns.
        for field in list(data):
            if isinstance(data[field], Node) and self.hidden_of(field):
                computed = True     # Rows replaced, derived one by one.
            else:
                self._check_derived(data, self.hidden_of(field))
        return computed or any(field in self.hidden or (
            self.columns[field].role == 'vector' and
            field.storage.name != 'float32') for field in data)


class VecSchemaManager(DerivedSchemaManager):
    """Writes vec0 DDL: bare names, vec0 types and roles, chunk_size.

    With ``Meta.content``, triggers delete a vector when its content row
    is deleted and move it when the content row's key changes."""
    def _create_virtual_table(self, safe=True, **options):
        ctx = self._create_context()
        ctx.literal('CREATE VIRTUAL TABLE ')
        if safe:
            ctx.literal('IF NOT EXISTS ')
        # Every name in the column list was checked against IDENTIFIER.
        return (ctx
                .sql(self.model)
                .literal(' USING vec0 (%s)' % self.model._vec.ddl()))

    def create_table(self, safe=True, **options):
        super(VecSchemaManager, self).create_table(safe, **options)
        self.model._index_partitions()


class VecInsert(ModelInsert):
    """An INSERT into a vec0 table: validated rows, run atomically."""
    _replace = False

    def __init__(self, model, *args, **kwargs):
        super(VecInsert, self).__init__(model, *args, **kwargs)
        # The training the rows' hidden columns were derived with.
        self._trained_with = model._training._stamp

    def on_conflict(self, *args, **kwargs):
        raise ValueError(
            'vec0 tables have no upsert (ON CONFLICT / OR REPLACE / OR '
            'IGNORE); use %s.replace(...) / replace_many(...) or save(), '
            'which delete and insert in one transaction.'
            % self.model.__name__)

    on_conflict_ignore = on_conflict_replace = on_conflict

    def returning(self, *columns):
        raise ValueError(
            'vec0 tables return no rows from INSERT ... RETURNING; insert, '
            'then select %s by key.' % self.model.__name__)

    def _execute(self, database):
        try:
            with atomic(database):
                self._derive_again_if_trained()
                if self._replace:
                    self._delete_existing()
                rows = self._insert
                if not isinstance(rows, list) or len(rows) < 2:
                    return super(VecInsert, self)._execute(database)
                statements = self._row_statements(database)
                if statements is not None:
                    return self._execute_many(database, *statements)
                # Rows that differ in columns or hold SQL: an INSERT each.
                # (SQLite copies a VALUES list with subqueries aside first,
                # which drops the type vec_int8() / vec_bit() give a BLOB.)
                for row in rows:
                    key = super(VecInsert, VecInsert(self.model, row)) \
                        ._execute(database)
                return key
        except OperationalError as exc:
            if 'UNIQUE constraint failed' not in str(exc):
                raise
            # What SQLite tables raise, so "except IntegrityError" works.
            raise IntegrityError('%s: a row with this key exists already '
                                 '(%s); use %s.replace() or save() to '
                                 'replace it.' % (self.model.__name__, exc,
                                                  self.model.__name__))

    def _derive_again_if_trained(self):
        """Inside the write transaction: if the index was trained since
        the rows' bits and lists were derived (by another process, say),
        derive them again, or they would go to outdated lists."""
        model = self.model
        if not model._vec.trained or \
                not isinstance(self._insert, (list, dict)):
            return
        model._training.refresh()
        if model._training._stamp != self._trained_with:
            model._vec.derive(self._insert if isinstance(self._insert, list)
                              else [self._insert])
            self._trained_with = model._training._stamp

    def _row_statements(self, database):
        """(SQL inserting one row, parameters of each row): vec0 takes
        one-row statements run by executemany several times faster than
        one INSERT with many rows (100k x 768 in batches of 1,000: 0.8 s
        against 3.6 s). None for rows that differ in columns or hold SQL.
        """
        rows = self._insert
        first = rows[0].keys()
        columns = [f for f in self.model._meta.sorted_fields if f in first]
        params = []
        for row in rows:
            if row.keys() != first:
                return None
            values = []
            for field in columns:
                value = row[field]
                if type(value) is not PackedVector:
                    if not isinstance(value, Node):
                        value = field.db_value(value)
                    if isinstance(value, Node):
                        return None
                values.append(value)
            params.append(values)
        one = dict((f, f.storage.typed(SQL('?')) if isinstance(
            f, VectorField) else SQL('?')) for f in columns)
        ctx = database.get_sql_context()
        return ctx.sql(VecInsert(self.model, one)).query()[0], params

    def _execute_many(self, database, sql, params):
        cursor = database.cursor()
        with __exception_wrapper__:
            cursor.executemany(sql, params)
            # What Peewee's INSERT returns: the last row's key.
            return cursor.execute('SELECT last_insert_rowid()').fetchone()[0]

    def _delete_existing(self):
        pk = self.model._meta.primary_key
        rows = [self._insert] if isinstance(self._insert, dict) else \
            self._insert
        keys = [row[pk] for row in rows if row.get(pk) is not None]
        for chunk in key_chunks(keys):
            self.model.delete().where(pk.in_(chunk)).execute()


class VecUpdate(ModelUpdate):
    """An UPDATE of a vec0 table. vec0 refuses int8 and bit vectors in an
    UPDATE (their type tag is lost on the way) and cannot UPDATE partition
    keys, so rows whose int8/bit columns or inverted list change are
    replaced instead, in one transaction."""
    _replace_rows = False   # Set when vec0 cannot UPDATE the columns.

    def _execute(self, database):
        model = self.model
        if not self._replace_rows:
            if not model._vec.update_by_key:
                return super(VecUpdate, self)._execute(database)
            # vec0 checks every column of a row an UPDATE visits, and on
            # a multi-row UPDATE sees partition keys and int8/bit vectors
            # as changed: update one key at a time instead.
            pk = model._meta.primary_key
            with atomic(database):
                keys = [k for (k,) in model.select(pk).where(self._where)
                        .tuples()]
                for key in keys:
                    query = self.clone()
                    query._where = pk == key
                    super(VecUpdate, query)._execute(database)
            return len(keys)
        # New values that are SQL (n + 1, bulk_update's CASE) are computed
        # by the SELECT that reads the old rows: the INSERT has no row.
        fields = model._meta.sorted_fields
        computed, plain = [], {}
        for field, value in self._update.items():
            if isinstance(value, Node):
                computed.append((field, value))
            else:
                plain[field] = value
        with atomic(database):
            query = model.select(*fields + [
                v.alias('_new%d' % i) for i, (f, v) in enumerate(computed)])
            rows = []
            for row in query.where(self._where).tuples():
                values = dict(zip(fields, row))
                values.update(plain)
                # Read back as stored, as the column gives it.
                values.update((f, f.python_value(value)) for (f, _), value
                              in zip(computed, row[len(fields):]))
                rows.append(values)
            if rows:
                model.replace_many(rows).execute()
        return len(rows)


class NoVectors(object):
    """What a VecModel without a VectorField has instead of its table: any
    use (create_table, insert, knn) says what is missing."""
    def __init__(self, model):
        self.name = model.__name__

    def __getattr__(self, attr):
        raise ImproperlyConfigured(
            '%s needs at least one VectorField to be a vec0 table, e.g. '
            'embedding = VectorField(384). (A VecModel without one serves '
            'only as a base class that shares Meta.)' % self.name)


class VecModel(VirtualModel):
    """
    A sqlite-vec ``vec0`` table as a Peewee model.

    Fields: one or more :class:`VectorField`; integer, float, boolean and
    text fields become metadata columns (filterable inside the KNN search).
    The primary key is ``rowid`` unless an integer or text primary key is
    declared. ``Meta`` options: ``partition_keys``, ``auxiliary_columns``
    (stored, returned, not filterable in KNN), ``chunk_size`` and
    ``content`` (the model whose primary key the rowid mirrors; filters on
    it are applied before the top-k), and for embedding text ``embedder``,
    ``embed`` (content field name(s) or a function of a content row) and
    ``embed_title`` (optional). Fields named like content fields are
    copied from the content row by :meth:`index`.

    Rows come back from :meth:`knn` with a ``distance`` attribute.
    """
    distance = VirtualField(FloatField)
    k = VirtualField(IntegerField)
    _is_vec_model = True

    class Meta:
        extension_module = 'vec0'
        schema_manager_class = VecSchemaManager
        model_metadata_class = DerivedMetadata
        partition_keys = ()
        auxiliary_columns = ()
        chunk_size = None
        content = None
        embedder = None
        embed = None
        embed_title = None
        on_schema_change = 'raise'
        progress = True
        batch_size = 256

    # Lets VectorField(quantize='bit') and VectorField(lists=N) bind here.
    _vector_index = True

    @classmethod
    def validate_model(cls):
        if cls.__name__ == 'VecModel' and cls.__module__ == __name__:
            return
        if cls._meta.primary_key is False:
            cls._meta.set_primary_key('rowid', RowIDField())
        for field in list(cls._meta.sorted_fields):
            if getattr(field, 'derived_from', None) or \
                    not isinstance(field, VectorField):
                continue
            # The hidden columns, made for this class's own field (one a
            # parent made for its field is made again).
            for name, wanted in (
                    (field.name + '_bits', field.quantize == 'bit' and (
                        lambda: VectorField(field.dimensions * field.bits,
                                            element_type='bit'))),
                    (field.name + '_list', field.lists and IntegerField)):
                existing = cls._meta.fields.get(name)
                if existing is not None:
                    if getattr(existing, 'derived_from', None) is None:
                        if not wanted:
                            continue
                        raise ImproperlyConfigured(
                            '%s.%s: the name is taken by the hidden column '
                            '%s.%s derives; rename the field.' % (
                                cls.__name__, name, cls.__name__, field.name))
                    cls._meta.remove_field(name)
                if wanted:
                    hidden = wanted()
                    hidden.derived_from = field.name
                    cls._meta.add_field(name, hidden)
        if not any(isinstance(f, VectorField)
                   for f in cls._meta.sorted_fields):
            # A base class that shares Meta (class BaseVec(VecModel) with
            # a database): its subclasses declare the vectors.
            cls._vec = NoVectors(cls)
            cls._indexer = None
            return
        if cls._meta.content is not None:
            check_content(cls)
        cls._vec = VecTable(cls)
        cls._indexer = Indexer(cls) if cls._meta.embedder else None
        cls._training = Training(cls)
        # Sync triggers on the content table need recursive triggers in
        # every process, also one that never calls create_tables().
        register_database(cls._meta.database,
                          recursive_triggers=cls._meta.content is not None)

    _fill_on_create = False

    @classmethod
    def fingerprint(cls):
        """What this index is built with (stored at creation, compared at
        every start-up)."""
        embedder = cls._indexer.embedder if cls._indexer else None
        content = cls._meta.content
        return {
            'kind': 'vec0', 'library': library_version(),
            'ddl': ddl_of(cls),
            'content': None if content is None else '%s.%s' % (
                content._meta.table_name,
                content._meta.primary_key.column_name),
            'vectors': dict((f.name, {
                'dimensions': f.dimensions, 'metric': f.metric,
                'element_type': f.element_type.name,
                'quantize': f.quantize, 'bits': f.bits,
                'matryoshka': f.matryoshka, 'lists': f.lists})
                for f in cls._vec.vectors),
            'embedder': embedder.fingerprint if embedder else None}

    @classmethod
    def compact(cls, vacuum=True):
        """
        Reclaim the space of deleted rows, which vec0 keeps until its
        table is rebuilt: copy the rows aside, drop and recreate the table
        (never ``ALTER TABLE ... RENAME``, which corrupts vec0 tables),
        copy them back, all in one transaction; then ``VACUUM``.
        Returns the number of rows kept.
        """
        rows = cls._rewrite_table({})
        if vacuum:
            reclaim_space(cls._meta.database)
        return rows

    @classmethod
    def _rewrite_table(cls, derived):
        """Copy the rows aside, drop and recreate the table, copy them back
        (``derived`` maps fields to SQL computing them from the copy's
        columns; those are not read from the old table), in one
        transaction. Returns the number of rows."""
        database = cls._meta.database
        pk = cls._meta.primary_key
        fields = [pk] + [f for f in cls._meta.sorted_fields if f is not pk]
        name = cls._meta.table_name + '_rewrite'
        copied = [f for f in fields if f not in derived]
        columns = dict((f, 'c%d' % i) for i, f in enumerate(copied))
        copy = Table(name, [columns[f] for f in copied])
        with atomic(database):
            database.execute(NodeList((
                SQL('CREATE TABLE'), Entity(name), SQL('AS'),
                cls.select(*[f.alias(columns[f]) for f in copied]))))
            cls._check_conversions(copy, columns)
            database.execute_sql(
                cls._schema._drop_table(safe=True).query()[0])
            database.execute_sql(
                cls._schema._create_table(safe=False).query()[0])
            cls._index_partitions()
            values = []
            for f in fields:
                if f in derived:
                    value = derived[f](lambda other: getattr(
                        copy, columns[other]))
                else:
                    value = getattr(copy, columns[f])
                if isinstance(f, VectorField):
                    value = f.storage.typed(value)
                elif f not in derived:
                    value = cls._vec.columns[f].converted(value)
                values.append(value)
            # (Peewee's INSERT ... SELECT: the values are derived here.)
            rows = database.execute(ModelInsert(
                cls, insert=copy.select(*values), columns=fields)).rowcount
            database.execute(NodeList((SQL('DROP TABLE'), Entity(name))))
        return rows

    @classmethod
    def _check_conversions(cls, copy, columns):
        """Raise SchemaChanged if a copied value does not fit the type its
        column now has (a field's type changed since the table was built)."""
        checked = [(f, getattr(copy, name)) for f, name in columns.items()
                   if not isinstance(f, VectorField)]
        lost = [cls._vec.columns[f].lost(value) for f, value in checked]
        row = (copy.select(*[value for _, value in checked] + lost)
               .where(reduce(operator.or_, lost)).limit(1).tuples()
               .execute(cls._meta.database))
        for values in row:
            for (field, _), value, is_lost in zip(
                    checked, values, values[len(checked):]):
                if is_lost:
                    raise SchemaChanged(
                        'Cannot rebuild %s from its own rows: column %s holds '
                        '%r (%s %r), which is not %s. Give %s.%s its old '
                        'type again, or change such values first.' % (
                            cls.__name__, field.column_name, value,
                            cls._meta.primary_key.name, values[0],
                            TYPE_NAMES[cls._vec.columns[field].vtype],
                            cls.__name__, field.name))

    @classmethod
    def _index_partitions(cls):
        """Index the partition keys of the vec0 chunk table. vec0 looks up
        the chunks of a partition (a search with ``user_id = ?``, a probed
        inverted list) by scanning that table; an index makes it a B-tree
        search (measured: 8-15% off searches of 16-32 inverted lists)."""
        keys = [c for c in cls._vec.columns.values()
                if c.role == 'partition key']
        table = cls._meta.table_name + '_chunks'
        for i, _ in enumerate(keys):
            cls._meta.database.execute(NodeList((
                SQL('CREATE INDEX IF NOT EXISTS'),
                Entity('%s_partition%02d' % (table, i)), SQL('ON'),
                Entity(table), EnclosedNodeList([Entity(
                    'partition%02d' % i)]))))

    @classmethod
    def _rebuild_in_place(cls, changes):
        """
        Rebuild the table from its own rows, embedding nothing, when the
        fingerprint ``changes`` only concern how the stored vectors are
        indexed (metric, ``quantize``, ``bits``, ``lists``, ``chunk_size``,
        dropped columns, a column type its values convert to): copy the
        rows aside, recreate the table, retrain. Returns False, changing
        nothing, when the vectors or a column must be made again from the
        content; raises SchemaChanged when that cannot be done.
        """
        for key, old, new in changes:
            if key != 'ddl' and not (key.startswith('vectors.') and
                                     key.rsplit('.', 1)[1] in REINDEXED):
                return False
            if key.endswith('.quantize') and 'int8' in (old, new):
                return False    # The stored vectors themselves change.
        database = cls._meta.database
        table = cls._meta.table_name
        kept = set(c.name for c in database.get_columns(table))
        if any(f.column_name not in kept for f in cls._meta.sorted_fields
               if f not in cls._vec.hidden):
            return False
        try:
            with atomic(database):
                cls._training.forget()
                fields = cls._vec.trained
                if fields and cls.select().count():
                    cls._training.train(vacuum=False)
                else:
                    cls._rewrite_table(cls._training.rederive(fields))
        except SchemaChanged:
            if cls._indexer is None:
                raise
            return False    # A changed column type: fill it from the content.
        return True

    @classmethod
    def _check_can_fill(cls):
        if cls._indexer is None:
            raise ImproperlyConfigured(
                '%s has no Meta.embedder, so it cannot be rebuilt from its '
                'content: drop the table and insert the vectors again, or '
                'set Meta.embedder, Meta.content and Meta.embed.'
                % cls.__name__)

    @classmethod
    def _fill_index(cls):
        cls.index(progress=progress_for(cls))

    @classmethod
    def _sync_triggers(cls):
        install_vec_triggers(cls)

    @classmethod
    def _sync_trigger_names(cls):
        return vec_trigger_names(cls)

    @classmethod
    def _require_indexer(cls):
        if cls._indexer is None:
            raise ImproperlyConfigured(
                '%s has no Meta.embedder; set Meta.embedder, Meta.content '
                'and Meta.embed to embed text.' % cls.__name__)
        return cls._indexer

    @classmethod
    def index(cls, rows=None, batch_size=None, progress=None):
        """
        Embed what is missing or stale, from the content model.

        Rows whose text is unchanged are skipped; cached embeddings are
        reused; vectors of deleted content rows are removed. Each batch
        is written in one transaction after it was embedded, so an
        interrupted run loses nothing and the next one resumes.

        :param rows: only these content rows (instances or keys), e.g.
            after a save: ``NoteVec.index([note])``.
        :param batch_size: rows per embedding batch and transaction
            (default ``Meta.batch_size``, 256).
        :param progress: ``True`` for a progress bar on stderr, or a
            function called with ``(done, total)``.
        :returns: counts (embedded, cached, updated, unchanged, skipped,
            removed).
        """
        if isinstance(rows, Model):
            rows = [rows]       # index(note) for index([note]).
        if batch_size is None:
            batch_size = cls._meta.batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError('batch_size must be a positive integer, got '
                             '%r.' % (batch_size,))
        stats = cls._require_indexer().run(rows, batch_size, progress)
        if cls._training.needed():
            cls.train()     # After the first bulk load.
        return stats

    @classmethod
    def train(cls, vacuum=True, sample=None):
        """
        Fit the data-dependent parts of the vector index to the stored
        vectors, and rewrite the table to match:

        * the mean vector (``center``): embeddings are anisotropic (their
          components share a common offset), and sign bits taken around
          zero lose most of their information. On the course FAQ data,
          centring raised recall@10 of ``quantize='bit'`` at 8x
          oversampling from 0.63 to 0.86.
        * for ``quantize='bit'``: each element's ``bits`` thresholds,
          quantiles of its values around the center.
        * for ``lists=N``: N k-means centroids (fitted on ``sample``
          vectors, default ``256 * N`` up to 131,072: smaller samples gave
          uneven lists and lower recall); each row goes to its nearest
          list.

        :meth:`index` trains after the first bulk load; call it after
        loading vectors yourself, and again when the data changes a lot.
        vec0 cannot UPDATE bit vectors or partition keys, so the table is
        rewritten (like :meth:`compact`) in one transaction, then vacuumed.
        """
        cls._training.train(vacuum, sample)

    @classmethod
    def center(cls, field):
        """The mean vector the bits (``quantize='bit'``) and lists
        (``lists=N``) of ``field`` are taken around, or None before
        :meth:`train`."""
        cls._training.refresh()
        return cls._training.part(field, 'center')

    @classmethod
    def probed_lists(cls, field, vector, probes=None):
        """The inverted lists a search for ``vector`` reads, or None (all:
        before :meth:`train`, or no ``lists``)."""
        return cls._training.probed_lists(field, vector, probes)

    @classmethod
    def search(cls, text, k=None, task=None):
        """
        KNN search for a text query, embedded with the query task
        (``RETRIEVAL_QUERY`` unless ``task`` says otherwise). ``k`` is as
        in :meth:`knn` (by default the LIMIT + OFFSET, else 10, so
        ``paginate()`` pages). Blank text or None (a search box left empty)
        finds no rows and is not embedded::

            NoteVec.search('function that sorts a list', k=5,
                           task='CODE_RETRIEVAL_QUERY')
        """
        KNNSelect.check_k(k)      # Before the query is embedded (paid).
        embedder = cls._require_indexer().embedder
        if text is None or (isinstance(text, str) and is_blank(text)):
            # Nothing to look for: no rows (and no embedding call), as
            # FTSModel.search() finds nothing without words.
            field = cls._vec.vector_field(None)
            return cls.knn(np.eye(1, field.dimensions)[0], k=0)
        return cls.knn(embedder.embed_query(text, task), k=k)

    @classmethod
    def knn(cls, vector, k=None, field=None, probes=None):
        """
        The ``k`` nearest rows to ``vector``, nearest first, each with
        ``.distance``. Compose with ``.where()``, ``.join()``, ``.limit()``,
        ``.get()``; filters never make it return fewer than ``k`` rows when
        ``k`` rows match. ``k`` defaults to the query's LIMIT + OFFSET, else
        10::

            NoteVec.knn(q, k=5).where(NoteVec.course == 'ml')

        With ``VectorField(lists=N)``, ``probes`` overrides how many lists
        the search reads.
        """
        return KNNSelect(cls, cls._vec.vector_field(field), vector, k,
                         probes)

    @classmethod
    def check_index(cls):
        """Compare the vectors with the content model (an IndexReport of
        content keys without a vector and vectors without content). With
        an embedder, rows with no text to embed are not missing, and
        ``stale`` says whether some vectors were made from text or values
        that have changed since (``index()`` brings them up to date)."""
        content = cls._meta.content
        if content is None:
            raise ImproperlyConfigured('%s has no Meta.content to check '
                                       'against.' % cls.__name__)
        pk = cls._meta.primary_key
        key = content._meta.primary_key
        report = compare_keys(cls.__name__, content.select(key),
                              cls.select(pk), stored=key.db_value)
        if cls._indexer is not None:
            plan = cls._indexer.plan()
            report.missing = [k for k in report.missing
                              if k not in plan.empty]
            changed = set(item[0] for item in plan.work) | plan.empty
            report.stale = bool(changed & plan.have)
        return report

    @classmethod
    def _rows(cls, rows, fields=None):
        """INSERT rows (dicts, or tuples of ``fields``) as checked
        {field: value} dicts."""
        shapes = {}    # The fields of each set of dict keys seen.
        columns = None
        checked = []
        for row in rows:
            if isinstance(row, dict):
                keys = tuple(row)
                shape = shapes.get(keys)
                if shape is None:
                    shape = shapes[keys] = cls._fields_named(keys)
                checked.append((shape, list(row.values())))
                continue
            if columns is None:     # By default the declared fields.
                columns = cls._fields_named(fields) if fields else tuple(
                    f for f in (cls._meta.sorted_fields[1:]
                                if cls._meta.auto_increment
                                else cls._meta.sorted_fields)
                    if f not in cls._vec.hidden)
            if len(row) != len(columns):
                raise ValueError(
                    'A %s row has %d values for %d columns (%s); pass '
                    'fields= or dicts.' % (
                        cls.__name__, len(row), len(columns),
                        ', '.join(f.name for f in columns)))
            checked.append((columns, list(row)))
        return cls._vec.check_rows(checked)

    @classmethod
    def _fields_named(cls, keys):
        """The columns named by ``keys`` (fields or their names)."""
        fields = []
        for key in keys:
            field = cls._meta.combined.get(key) if isinstance(key, str) \
                else key
            if not isinstance(field, Field) or field not in cls._vec.columns:
                raise ValueError('%s has no column %r.' % (
                    cls.__name__, key))
            fields.append(field)
        return tuple(fields)

    @classmethod
    def insert(cls, __data=None, **insert):
        row = cls._normalize_data(__data, insert)
        return VecInsert(cls, cls._rows([row])[0])

    @classmethod
    def insert_many(cls, rows, fields=None):
        return VecInsert(cls, insert=cls._rows(rows, fields))

    @classmethod
    def replace(cls, __data=None, **insert):
        """Insert a row, first deleting any row with the same key."""
        query = cls.insert(__data, **insert)
        query._replace = True
        return query

    @classmethod
    def insert_from(cls, query, fields):
        """``INSERT ... SELECT``; for float vectors without derived columns
        only (SQL cannot make ``quantize='bit'`` bits, inverted lists or
        the tags of int8/bit vectors: read the rows, then insert_many())."""
        derived = [f.name for f in cls._meta.sorted_fields
                   if f in cls._vec.hidden or (
                       isinstance(f, VectorField) and
                       f.storage.name != 'float32')]
        if derived:
            raise ValueError(
                '%s.insert_from() cannot fill %s from SQL; read the rows and '
                'pass them to %s.insert_many(), which derives and tags them.'
                % (cls.__name__, ', '.join(derived), cls.__name__))
        return super(VecModel, cls).insert_from(query, fields)

    @classmethod
    def replace_many(cls, rows, fields=None):
        """Insert rows, first deleting rows with the same keys; of rows
        that share a key, the last wins (as with INSERT OR REPLACE)."""
        rows = cls._rows(rows, fields)
        pk = cls._meta.primary_key
        last = dict((row[pk], i) for i, row in enumerate(rows)
                    if row.get(pk) is not None)
        query = VecInsert(cls, insert=[
            row for i, row in enumerate(rows)
            if row.get(pk) is None or last[row[pk]] == i])
        query._replace = True
        return query

    @classmethod
    def update(cls, __data=None, **update):
        data = cls._normalize_data(__data, update)
        data = dict((cls._meta.combined[k] if isinstance(k, str) else k, v)
                    for k, v in data.items())
        replace = cls._vec.check_update(data)
        query = VecUpdate(cls, data)
        query._replace_rows = replace
        return query

    def save(self, force_insert=False, only=None):
        """Insert, or replace the stored row with the same key (columns
        the instance was not loaded with keep their stored values)."""
        if only is not None and not force_insert and self._pk is not None:
            return super(VecModel, self).save(only=only)
        data = dict((name, value) for name, value in self.__data__.items()
                    if name in self._meta.fields)
        model = type(self)
        if self._pk is None or force_insert:
            key = model.insert(**data).execute()
            if self._pk is None:
                self._pk = key
        else:
            with atomic(self._meta.database):
                # A row loaded with some columns keeps its others.
                missing = [f for f in self._meta.sorted_fields
                           if f.name not in data and
                           f not in self._vec.hidden]
                stored = missing and (model
                                      .select(*missing)
                                      .where(self._pk_expr())
                                      .tuples()
                                      .first())
                if stored:
                    data.update(zip([f.name for f in missing], stored))
                model.replace(**data).execute()
        self._dirty.clear()
        return 1
