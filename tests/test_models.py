import datetime

import numpy as np
import peewee
import pytest
from peewee import AutoField
from peewee import BlobField
from peewee import BooleanField
from peewee import CharField
from peewee import DateTimeField
from peewee import DecimalField
from peewee import FloatField
from peewee import ImproperlyConfigured
from peewee import IntegrityError
from peewee import IntegerField
from peewee import Model
from peewee import TextField
from peewee import TimestampField
from peewee import fn

from playhouse_vec import VecModel
from playhouse_vec import VectorField


def ddl(model):
    return model._schema._create_table().query()[0]


def declare(db, name='item', meta=None, **fields):
    attrs = dict(fields)
    attrs['Meta'] = type('Meta', (), dict(meta or {}, database=db,
                                          table_name=name))
    return type(str(name.title()), (VecModel,), attrs)


def test_ddl_bare_names_types_roles_and_options(db):
    Chunk = declare(
        db, 'chunk',
        meta=dict(partition_keys=('user_id',),
                  auxiliary_columns=('body', 'raw'), chunk_size=128),
        user_id=IntegerField(),
        embedding=VectorField(768, metric='cosine'),
        codes=VectorField(16, element_type='int8'),
        signs=VectorField(64, element_type='bit'),
        genre=CharField(), year=IntegerField(), rating=FloatField(),
        is_new=BooleanField(), body=TextField(null=True),
        raw=BlobField(null=True))
    assert ddl(Chunk) == (
        'CREATE VIRTUAL TABLE IF NOT EXISTS "chunk" USING vec0 ('
        'user_id integer partition key, '
        'embedding float[768] distance_metric=cosine, '
        'codes int8[16] distance_metric=l2, signs bit[64], '
        'genre text, year integer, rating float, is_new boolean, '
        '+body text, +raw blob, chunk_size=128)')
    db.create_tables([Chunk])
    db.create_tables([Chunk])  # safe=True: every start-up.
    assert Chunk.table_exists()


@pytest.mark.parametrize('pk, expected', [
    (IntegerField(primary_key=True), 'doc_id integer primary key'),
    (AutoField(), 'doc_id integer primary key'),
    (TextField(primary_key=True), 'doc_id text primary key'),
])
def test_declared_primary_keys(db, pk, expected):
    Doc = declare(db, 'doc', doc_id=pk, embedding=VectorField(2))
    assert ddl(Doc).startswith(
        'CREATE VIRTUAL TABLE IF NOT EXISTS "doc" USING vec0 (%s, ' % expected)
    db.create_tables([Doc])
    key = 'a' if isinstance(pk, TextField) else 7
    Doc.insert(doc_id=key, embedding=[1, 2]).execute()
    # A real primary key: duplicates fail (NOT NULL would have made it a
    # metadata column without uniqueness).
    with pytest.raises(peewee.DatabaseError):
        Doc.insert(doc_id=key, embedding=[3, 4]).execute()
    row = Doc.knn([1, 2], k=1).get()
    assert row.doc_id == key and not hasattr(Doc, 'rowid')


def test_default_primary_key_is_rowid(db):
    Doc = declare(db, 'doc', embedding=VectorField(2))
    assert Doc._meta.primary_key.name == 'rowid'
    db.create_tables([Doc])
    first = Doc.create(embedding=[1, 1])
    assert first.rowid == 1
    assert Doc.get_by_id(1).rowid == 1


@pytest.mark.parametrize('fields, meta, message', [
    (dict(distance=FloatField()), {}, "'distance' is reserved"),
    (dict(K=IntegerField()), {}, "'K' is reserved"),
    (dict(title=TextField(column_name='my title')), {}, 'bare column names'),
    (dict(price=DecimalField()), {}, 'cannot be a vec0 metadata column'),
    (dict(when=DateTimeField()), {}, 'cannot be a vec0 metadata column'),
    (dict(raw=BlobField()), {}, 'allowed types: integer, float, boolean'),
    (dict(note=TextField(null=True)), {}, 'cannot hold NULL'),
    (dict(score=FloatField()), dict(partition_keys=('score',)),
     'partition key'),
    (dict(flag=BooleanField()), dict(auxiliary_columns=('flag',)),
     'auxiliary column'),
    ({}, dict(partition_keys=('missing',)), "names 'missing'"),
    (dict(year=IntegerField(index=True)), {}, 'declare it with index=False'),
    (dict(code=TextField(unique=True)), {}, 'index=False, unique=False'),
    ({}, dict(chunk_size=100), 'multiple of 8'),
    ({}, dict(chunk_size=8192), 'multiple of 8 up to'),
])
def test_invalid_declarations_fail_clearly(db, fields, meta, message):
    fields.setdefault('embedding', VectorField(8))
    with pytest.raises(ImproperlyConfigured, match=message):
        declare(db, 'bad', meta=meta, **fields)


def test_needs_a_vector_column_to_be_used(db):
    Bad = declare(db, 'bad', title=TextField())
    for use in (lambda: db.create_tables([Bad]),
                lambda: Bad.insert(title='x').execute(),
                lambda: list(Bad.knn([1, 2], k=1))):
        with pytest.raises(ImproperlyConfigured, match='at least one'):
            use()
    assert not Bad.table_exists()


def test_base_class_without_vectors_shares_meta(db):
    class BaseVec(VecModel):
        class Meta:
            database = db
            chunk_size = 64

    class Doc(BaseVec):
        embedding = VectorField(2)

    db.create_tables([Doc])
    Doc.insert(rowid=1, embedding=[1, 0]).execute()
    assert [(r.rowid, r.distance) for r in Doc.knn([1, 0], k=1)] == [(1, 0)]
    assert 'chunk_size=64' in ddl(Doc)


def test_default_chunk_size_follows_vector_size(db):
    sizes = {}
    for dims in (64, 384, 768, 1536):
        model = declare(db, 'c%d' % dims, embedding=VectorField(dims))
        sizes[dims] = model._vec.chunk_size
    assert sizes == {64: 1024, 384: 512, 768: 256, 1536: 128}
    bits = declare(db, 'bits', embedding=VectorField(1024,
                                                     element_type='bit'))
    assert bits._vec.chunk_size == 1024


@pytest.fixture
def Note(db):
    Note = declare(db, 'note', meta=dict(auxiliary_columns=('title',)),
                   embedding=VectorField(3), course=TextField(),
                   year=IntegerField(), title=TextField(null=True))
    db.create_tables([Note])
    return Note


def stored(db):
    return db.execute_sql(
        'select rowid, course, year, title from note order by rowid'
    ).fetchall()


def test_insert_create_save_delete(db, Note):
    Note.insert(rowid=5, embedding=[1, 0, 0], course='ml', year=1).execute()
    note = Note.create(embedding=[0, 1, 0], course='de', year=2, title='t')
    assert note.rowid == 6
    note.course = 'ml'
    note.save()
    assert Note.get_by_id(6).course == 'ml'
    Note.get_by_id(5).delete_instance()
    Note.delete().where(Note.year == 99).execute()
    assert stored(db) == [(6, 'ml', 2, 't')]


def test_save_of_an_existing_key_replaces_the_row(db, Note):
    Note.create(rowid=1, embedding=[1, 0, 0], course='ml', year=1)
    Note(rowid=1, embedding=[0, 0, 1], course='de', year=2).save()
    assert stored(db) == [(1, 'de', 2, None)]
    np.testing.assert_array_equal(Note.get_by_id(1).embedding, [0, 0, 1])
    Note.replace(rowid=1, embedding=[0, 1, 0], course='x', year=3).execute()
    Note.replace_many([
        dict(rowid=1, embedding=[1, 1, 0], course='y', year=4),
        dict(rowid=2, embedding=[1, 1, 1], course='z', year=5)]).execute()
    assert stored(db) == [(1, 'y', 4, None), (2, 'z', 5, None)]


@pytest.mark.parametrize('load', ['knn', 'select'])
def test_saving_a_partly_loaded_row_keeps_its_other_columns(db, Note, load):
    Note.create(rowid=1, embedding=[1, 0, 0], course='ml', year=7,
                title='kept')
    columns = (Note.rowid, Note.course)
    row = (Note.knn([1, 0, 0], k=1).select(*columns).get() if load == 'knn'
           else Note.select(*columns).get())
    row.course = 'ai'
    row.save()
    assert stored(db) == [(1, 'ai', 7, 'kept')]
    np.testing.assert_array_equal(Note.get_by_id(1).embedding, [1, 0, 0])


def test_saving_a_knn_result_keeps_it(db, Note):
    Note.create(rowid=1, embedding=[1, 0, 0], course='ml', year=1)
    row = Note.knn([1, 0, 0], k=1).get()
    row.year = 2
    row.save()
    assert stored(db) == [(1, 'ml', 2, None)]


@pytest.mark.parametrize('kind', ['partition', 'bit', 'int8', 'lists',
                                  'plain'])
def test_multi_row_update_of_metadata_on_every_kind_of_table(db, kind):
    vector = VectorField(8, metric='cosine', **{
        'bit': dict(quantize='bit'), 'int8': dict(quantize='int8'),
        'lists': dict(lists=2)}.get(kind, {}))
    Doc = declare(db, 'doc', meta=dict(
        partition_keys=('user',) if kind == 'partition' else ()),
        embedding=vector, user=IntegerField(), year=IntegerField())
    db.create_tables([Doc])
    rng = np.random.default_rng(5)
    Doc.insert_many([dict(rowid=i, embedding=rng.normal(size=8),
                          user=i % 2, year=2000) for i in range(1, 41)]
                    ).execute()
    if kind in ('bit', 'lists'):
        Doc.train(vacuum=False)
    before = dict(Doc.select(Doc.rowid, Doc.embedding).tuples())
    assert Doc.update(year=Doc.year + 1).where(Doc.rowid > 30).execute() == 10
    assert Doc.update(year=Doc.year + 1).execute() == 40
    years = dict(Doc.select(Doc.rowid, Doc.year).tuples())
    assert years == dict((i, 2002 if i > 30 else 2001) for i in range(1, 41))
    after = dict(Doc.select(Doc.rowid, Doc.embedding).tuples())
    assert all(np.array_equal(before[i], after[i]) for i in before)
    q = rng.normal(size=8)
    assert Doc.knn(q, k=40).count() == 40
    # New vectors with an SQL expression, and bulk_update's CASE: the
    # expression is evaluated per row and derived columns follow.
    new = rng.normal(size=(5, 8))
    Doc.update(embedding=new[0], year=Doc.year + 1).where(
        Doc.rowid == 1).execute()
    docs = list(Doc.select().where(Doc.rowid.between(2, 5)))
    for doc in docs:
        doc.embedding, doc.year = new[doc.rowid - 1], doc.year * 2
    assert Doc.bulk_update(docs, fields=['embedding', 'year']) == 4
    years = dict(Doc.select(Doc.rowid, Doc.year).tuples())
    assert [years[i] for i in range(1, 7)] == [2002] + [4002] * 4 + [2001]
    probes = dict(probes=2) if kind == 'lists' else {}
    for i in range(1, 6):
        assert Doc.knn(new[i - 1], k=1, **probes).get().rowid == i


@pytest.mark.parametrize('element_type', ['int8', 'bit'])
def test_bulk_update_and_expressions_on_int8_and_bit_vectors(db,
                                                             element_type):
    Doc = declare(db, 'doc', n=IntegerField(),
                  embedding=VectorField(8, element_type=element_type))
    db.create_tables([Doc])
    for i in range(1, 4):
        Doc.create(rowid=i, embedding=[i % 2, 1, 0, 1, 0, 1, 0, 1], n=10 * i)
    Doc.update(embedding=[1] * 8, n=Doc.n + 1).where(Doc.rowid == 1).execute()
    docs = list(Doc.select().where(Doc.rowid > 1))
    for doc in docs:
        doc.embedding = [0] * 7 + [doc.rowid - 2]
    assert Doc.bulk_update(docs, fields=['embedding']) == 2
    rows = dict((r.rowid, (r.n, list(r.embedding.astype(int))))
                for r in Doc.select())
    assert rows == {1: (11, [1] * 8), 2: (20, [0] * 8),
                    3: (30, [0] * 7 + [1])}


def test_insert_many_runs_one_statement_per_row(db):
    Doc = declare(db, 'doc', meta=dict(auxiliary_columns=('note',)),
                  embedding=VectorField(8, metric='cosine'),
                  codes=VectorField(8, element_type='int8'),
                  signs=VectorField(8, element_type='bit'),
                  year=IntegerField(), flag=BooleanField(),
                  note=TextField(null=True))
    db.create_tables([Doc])

    def row(i, **extra):
        values = dict(embedding=[i + 1.0] + [0.5] * 7, codes=[i] * 8,
                      signs=[i % 2] * 8, year=2000 + i, flag=i % 2 == 0,
                      note=None if i % 2 else 'n%d' % i)
        values.update(extra)
        return values
    rows = [row(i, rowid=i + 1) for i in range(4)]
    query = Doc.insert_many(rows)
    assert query._row_statements(db) is not None    # executemany
    assert query.execute() == 4                     # the last key
    stored = [(r.rowid, r.embedding[0], list(r.codes), list(r.signs),
               r.year, r.flag, r.note) for r in Doc.select()]
    assert stored == [(i + 1, i + 1.0, [i] * 8, [bool(i % 2)] * 8,
                       2000 + i, i % 2 == 0, None if i % 2 else 'n%d' % i)
                      for i in range(4)]
    # Rows that differ in columns, or hold SQL, run an INSERT each.
    mixed = Doc.insert_many([row(4, rowid=10), row(5)])
    assert mixed._row_statements(db) is None
    assert mixed.execute() == 11
    computed = Doc.insert_many([row(6, rowid=20), row(
        7, rowid=21, year=Doc.select(fn.MAX(Doc.year)))])
    assert computed._row_statements(db) is None
    computed.execute()
    assert Doc.get_by_id(21).year == 2006
    assert list(Doc.get_by_id(21).codes) == [7] * 8
    # A duplicate key in the middle writes none of the rows.
    with pytest.raises(IntegrityError):
        Doc.insert_many([row(8, rowid=30), row(9, rowid=1),
                         row(10, rowid=31)]).execute()
    assert Doc.select().where(Doc.rowid >= 30).count() == 0
    assert Doc.select().count() == 8


def test_update_of_values_and_refused_key_updates(db):
    Part = declare(db, 'part', meta=dict(partition_keys=('user',)),
                   embedding=VectorField(2), user=IntegerField(),
                   year=IntegerField())
    db.create_tables([Part])
    Part.create(rowid=1, embedding=[1, 0], user=1, year=1)
    Part.update(year=5, embedding=[0, 1]).where(Part.rowid == 1).execute()
    assert Part.get_by_id(1).year == 5
    with pytest.raises(ValueError, match='cannot UPDATE Part.user'):
        Part.update(user=2).execute()
    with pytest.raises(ValueError, match='cannot UPDATE Part.rowid'):
        Part.update(rowid=2).execute()
    with pytest.raises(ValueError, match='cannot be NULL'):
        Part.update(year=None).execute()
    # Changing a partition key through save() replaces the row.
    part = Part.get_by_id(1)
    part.user = 2
    part.save()
    assert Part.get_by_id(1).user == 2


def test_upsert_clauses_fail_clearly(Note):
    query = Note.insert(rowid=1, embedding=[1, 0, 0], course='a', year=1)
    for method in ('on_conflict_replace', 'on_conflict_ignore'):
        with pytest.raises(ValueError, match='no upsert'):
            getattr(query, method)()
    with pytest.raises(ValueError, match='no rows from INSERT'):
        query.returning(Note.rowid)
    query.execute()
    for insert in (query, Note.insert_many([dict(
            rowid=1, embedding=[0, 1, 0], course='b', year=2)])):
        with pytest.raises(IntegrityError, match='exists already.*replace'):
            insert.execute()
    assert stored(db=Note._meta.database) == [(1, 'a', 1, None)]


def test_content_models_the_triggers_cannot_serve_are_refused(db):
    from peewee import CompositeKey

    class Pair(Model):
        a = IntegerField()
        b = IntegerField()

        class Meta:
            database = db
            primary_key = CompositeKey('a', 'b')

    with pytest.raises(ImproperlyConfigured, match='single-column primary '
                                                   'key.*composite'):
        declare(db, 'pairvec', meta=dict(content=Pair),
                embedding=VectorField(2))

    class Note(Model):
        title = TextField()

        class Meta:
            database = db

    with pytest.raises(ImproperlyConfigured, match="attached database 'aux'"):
        declare(db, 'notevec', meta=dict(content=Note, schema='aux'),
                embedding=VectorField(2))


@pytest.mark.parametrize('row, message', [
    (dict(embedding=[1, 0, 0], course=None, year=1), 'cannot be NULL'),
    (dict(embedding=[1, 0, 0], year=1), 'Missing value for Note.course'),
    (dict(embedding=[1, 0, 0], course='a', year='n/a'), 'expects an int'),
    (dict(embedding=None, course='a', year=1), 'cannot be NULL'),
    (dict(course='a', year=1), 'Missing value for Note.embedding'),
    (dict(embedding=[1, 0], course='a', year=1), 'has 2 dimensions'),
    (dict(embedding=[1, 0, 0], course='a', year=1, color='red'),
     "no column 'color'"),
])
def test_bad_rows_are_rejected_before_anything_is_written(db, Note, row,
                                                          message):
    good = dict(embedding=[0, 0, 1], course='ok', year=0)
    with db.atomic():  # Inside an open transaction, where vec0 would
        with pytest.raises(ValueError, match=message):  # keep partial rows.
            Note.insert_many([good, row]).execute()
        if 'color' not in row:  # Model() ignores unknown attributes.
            with pytest.raises(ValueError, match=message):
                Note.create(**row)
    assert stored(db) == []


@pytest.mark.parametrize('bad, message', [
    (np.array([1.0, np.nan, 0.0]), 'NaN or infinity'),
    (np.array([1.0, 0.0, np.inf], np.float32), 'NaN or infinity'),
    (np.array([1e39, 0.0, 0.0]), 'NaN or infinity'),  # Overflows float32.
    (np.array([0.0, -0.0, 0.0]), 'all zeros'),
    (np.array([1.0, 0.0]), 'has 2 dimensions'),
    (np.ones((3, 1)), 'one-dimensional'),
    (np.array(['a', 'b', 'c']), 'expected numbers'),
])
def test_bad_array_in_a_batch_is_named_and_nothing_written(
        db, bad, message):
    # Arrays of one shape are checked together; a batch that fails is
    # checked row by row, so the error is the one for that vector.
    Doc = declare(db, 'doc', embedding=VectorField(3, metric='cosine'),
                  course=TextField())
    db.create_tables([Doc])
    rows = [dict(embedding=np.array([1.0, i, 2.0]), course='c')
            for i in range(4)]
    rows.insert(2, dict(embedding=bad, course='c'))
    with db.atomic():
        with pytest.raises(ValueError, match=message):
            Doc.insert_many(rows).execute()
    assert Doc.select().count() == 0


def test_arrays_checked_together_are_stored_as_one_by_one(db, rng):
    Doc = declare(db, 'doc', embedding=VectorField(4, metric='cosine'),
                  course=TextField())
    db.create_tables([Doc])
    vectors = rng.normal(size=(50, 4))            # float64: converted.
    rows = [dict(embedding=v, course='c') for v in vectors[:25]]
    rows += [dict(rowid=100 + i, embedding=v.astype(np.float32),
                  course='d') for i, v in enumerate(vectors[25:])]
    Doc.insert_many(rows).execute()
    stored = dict((r.rowid, r.embedding) for r in Doc.select())
    assert len(stored) == 50
    one_by_one = [Doc.embedding.pack(v) for v in vectors]
    packed = Doc.embedding.pack_many(list(vectors))
    assert packed == one_by_one
    assert [stored[k].tobytes() for k in sorted(stored)] == one_by_one


class Cents(IntegerField):
    """Money stored as integer cents."""
    def db_value(self, value):
        return None if value is None else int(round(value * 100))

    def python_value(self, value):
        return None if value is None else value / 100


def test_values_are_checked_as_the_field_stores_them(db):
    # A field's db_value() decides what is written: a datetime stored as
    # an integer, euros as cents. Converted once, whatever the path.
    Doc = declare(db, 'doc', embedding=VectorField(2), price=Cents(),
                  created=TimestampField(index=False))
    db.create_tables([Doc])
    when = datetime.datetime(2024, 5, 1, 12, 0)
    Doc.create(rowid=1, embedding=[1, 0], price=1.25, created=when)
    Doc.insert_many([dict(rowid=2, embedding=[0, 1], price=2.5,
                          created=when)]).execute()
    row = Doc.get_by_id(1)
    row.price = 3.75
    row.save()
    Doc.update(price=4.5).where(Doc.rowid == 2).execute()
    assert db.execute_sql('select rowid, price from doc order by rowid'
                          ).fetchall() == [(1, 375), (2, 450)]
    assert [(r.price, r.created) for r in Doc.knn([1, 0], k=2)] == [
        (3.75, when), (4.5, when)]
    with pytest.raises(ValueError, match="Doc.created cannot store 'x'"):
        Doc.create(embedding=[1, 1], price=1, created='x')
    with pytest.raises(ValueError, match="Doc.price cannot store nan"):
        Doc.create(embedding=[1, 1], price=float('nan'), created=when)


def test_rowid_none_is_chosen_by_vec0_and_tuples_skip_hidden_columns(db):
    Doc = declare(db, 'doc', embedding=VectorField(8, quantize='bit'),
                  year=IntegerField())
    db.create_tables([Doc])
    v = np.arange(8) - 3.5
    assert Doc.create(rowid=None, embedding=v, year=1).rowid == 1
    Doc.insert_many([dict(rowid=None, embedding=v, year=2),
                     dict(rowid=7, embedding=v, year=3)]).execute()
    copy = Doc.get_by_id(7)
    copy.rowid = None
    copy.save()
    # Tuples hold the declared fields; the bits are derived.
    Doc.insert_many([(v, 4), (-v, 5)]).execute()
    assert [(r.rowid, r.year) for r in Doc.select().order_by(Doc.rowid)] \
        == [(1, 1), (2, 2), (7, 3), (8, 3), (9, 4), (10, 5)]
    assert [r.year for r in Doc.knn(-v, k=1)] == [5]


def test_replace_many_keeps_the_last_row_of_a_key(db, Note):
    Note.create(rowid=1, embedding=[1, 0, 0], course='a', year=1)
    Note.replace_many([dict(rowid=1, embedding=[0, 1, 0], course='b', year=2),
                       dict(rowid=2, embedding=[0, 0, 1], course='c', year=3),
                       dict(rowid=1, embedding=[1, 1, 0], course='d', year=4)
                       ]).execute()
    assert stored(db) == [(1, 'd', 4, None), (2, 'c', 3, None)]


def test_defaults_are_checked_and_packed(db):
    Doc = declare(db, 'doc', embedding=VectorField(
        8, quantize='bit', default=lambda: np.arange(8) - 3.5),
        year=IntegerField(default='n/a'))
    db.create_tables([Doc])
    with pytest.raises(ValueError, match="Doc.year expects an integer"):
        Doc.insert(embedding=np.ones(8)).execute()
    Doc.insert(year=1).execute()       # Bits derived from the default.
    assert Doc.get().embedding_bits is not None
    assert [r.year for r in Doc.knn(np.arange(8) - 3.5, k=1)] == [1]


def test_failed_bulk_insert_leaves_nothing(db, Note):
    Note.create(rowid=3, embedding=[1, 0, 0], course='a', year=1)
    rows = [dict(rowid=i, embedding=[i, 1, 0], course='b', year=i)
            for i in (1, 2, 3)]  # 3 is a duplicate: vec0 fails mid-way.
    with db.atomic():
        with pytest.raises(peewee.DatabaseError):
            Note.insert_many(rows).execute()
    assert stored(db) == [(3, 'a', 1, None)]


def test_tuple_rows_with_fields(db, Note):
    Note.insert_many([([1, 0, 0], 'a', 1), ([0, 1, 0], 'b', 2)],
                     fields=[Note.embedding, Note.course, Note.year]).execute()
    assert [r[1] for r in stored(db)] == ['a', 'b']
    with pytest.raises(ValueError, match='3 values for 4 columns'):
        Note.insert_many([([1, 0, 0], 'a', 1)]).execute()


def test_int8_and_bit_columns_are_written_typed(db, rng):
    Multi = declare(db, 'multi',
                    codes=VectorField(8, element_type='int8'),
                    signs=VectorField(8, element_type='bit'))
    db.create_tables([Multi])
    codes = rng.integers(-128, 128, size=(40, 8))
    signs = rng.integers(0, 2, size=(40, 8))
    Multi.insert_many([dict(rowid=i + 1, codes=c, signs=s)
                       for i, (c, s) in enumerate(zip(codes, signs))]
                      ).execute()
    assert db.execute_sql('select vec_type(codes), vec_type(signs) '
                          'from multi limit 1').fetchone() == ('int8', 'bit')
    query = rng.integers(-128, 128, size=8)
    rows = [(r.rowid, r.distance) for r in
            Multi.knn(query, k=5, field=Multi.codes)]
    truth = np.sqrt(((codes - query) ** 2).sum(axis=1))
    np.testing.assert_allclose([d for _, d in rows], np.sort(truth)[:5],
                               rtol=1e-5)
    bits = [(r.rowid, r.distance) for r in
            Multi.knn(signs[0], k=40, field=Multi.signs)]
    hamming = (signs != signs[0]).sum(axis=1)
    assert sorted(d for _, d in bits) == sorted(hamming.tolist())
    assert dict(bits)[1] == 0
    np.testing.assert_array_equal(Multi.get_by_id(2).codes, codes[1])
    with pytest.raises(ValueError, match='several vector columns'):
        Multi.knn(query)


def test_sql_values_that_cannot_be_checked_are_rolled_back(db, Note):
    # An SQL expression is only evaluated by SQLite; when it yields NULL,
    # vec0 keeps a partial row inside an open transaction unless the insert
    # runs in its own savepoint.
    with db.atomic():
        with pytest.raises(peewee.DatabaseError, match='NULL'):
            Note.insert(embedding=[1, 0, 0], course=peewee.SQL('NULL'),
                        year=1).execute()
    assert stored(db) == []


def test_partition_keys_are_indexed(db):
    class Part(VecModel):
        embedding = VectorField(4)
        user = IntegerField()

        class Meta:
            database = db
            partition_keys = ('user',)

    def indexes():
        return [r[0] for r in db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND "
            "tbl_name = 'part_chunks'")]
    db.create_tables([Part])
    assert indexes() == ['part_chunks_partition00']
    Part.insert_many([{'embedding': [i, 1, 0, 0], 'user': i % 3}
                      for i in range(30)]).execute()
    plan = ' '.join(str(r) for r in db.execute_sql(
        'EXPLAIN QUERY PLAN SELECT chunk_id FROM part_chunks '
        'WHERE partition00 = 1'))
    assert 'part_chunks_partition00' in plan
    Part.compact()
    assert indexes() == ['part_chunks_partition00']
    rows = Part.knn([5, 1, 0, 0], k=3).where(Part.user == 1)
    assert [r.rowid for r in rows] == [5, 8, 2]
