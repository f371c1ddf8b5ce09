import json
import os

import numpy as np
import pytest
from peewee import BooleanField
from peewee import FloatField
from peewee import IntegerField
from peewee import Model
from peewee import TextField

from playhouse_vec import FTSModel
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import register_database
from playhouse_vec.schema import SchemaChanged

from conftest import brute_force
from conftest import counting_embedder
from conftest import new_database


def models(db, embedder=None, dims=8, metric='cosine', tokenize=None,
           policy='raise', extra=None):
    """The app's models as a given version of its code declares them."""
    class Note(Model):
        title = TextField()
        course = TextField(default='ml')

        class Meta:
            database = db
            table_name = 'note'

    vec_meta = dict(database=db, table_name='notevec', content=Note,
                    embed='title', on_schema_change=policy, progress=None)
    if embedder is not None:
        vec_meta['embedder'] = embedder
    attrs = {'embedding': VectorField(dims, metric=metric),
             'Meta': type('Meta', (), vec_meta)}
    attrs.update(extra or {})
    NoteVec = type('NoteVec', (VecModel,), attrs)
    fts_meta = dict(database=db, table_name='notefts', content=Note,
                    on_schema_change=policy)
    if tokenize:
        fts_meta['tokenize'] = tokenize
    NoteFTS = type('NoteFTS', (FTSModel,), {
        'title': SearchField(), 'Meta': type('Meta', (), fts_meta)})
    return Note, NoteVec, NoteFTS


def start(db, *args, **kwargs):
    """Start-up: declare the models and create_tables(safe=True)."""
    Note, NoteVec, NoteFTS = models(db, *args, **kwargs)
    db.create_tables([Note, NoteVec, NoteFTS])
    return Note, NoteVec, NoteFTS


def stored(db, name):
    row = db.execute_sql('select fingerprint, status from '
                         'playhouse_vec_schema where "index" = ?',
                         (name,)).fetchone()
    return json.loads(row[0]), row[1]


@pytest.fixture
def app(db):
    embedder = counting_embedder()
    Note, NoteVec, NoteFTS = start(db, embedder)
    Note.insert_many([{'title': 'note about topic %d' % i,
                       'course': 'ml' if i % 2 else 'de'}
                      for i in range(40)]).execute()
    NoteVec.index()
    return db, embedder


def test_fingerprints_are_stored_as_json(app):
    db, embedder = app
    fingerprint, status = stored(db, 'notevec')
    assert status == 'ready' and fingerprint['kind'] == 'vec0'
    assert fingerprint['vectors'] == {'embedding': {
        'dimensions': 8, 'metric': 'cosine', 'element_type': 'float32',
        'quantize': None, 'bits': None, 'matryoshka': False,
        'lists': None}}
    assert fingerprint['embedder']['model'] == 'hash-v1'
    assert fingerprint['ddl'].startswith('CREATE VIRTUAL TABLE "notevec"')
    fts, _ = stored(db, 'notefts')
    assert fts['tokenize'] == 'porter unicode61 remove_diacritics 2'
    assert fts['columns'] == ['title']
    start(db, counting_embedder())   # Same code again: nothing happens.
    assert stored(db, 'notevec')[0] == fingerprint


@pytest.mark.parametrize('change, message', [
    (dict(dims=16), 'vectors.embedding.dimensions: 8 -> 16'),
    (dict(metric='l2'), 'vectors.embedding.metric: cosine -> l2'),
    (dict(model='hash-v2'), 'embedder.model: hash-v1 -> hash-v2'),
    (dict(tokenize='unicode61'), 'tokenize: porter unicode61 '
                                 'remove_diacritics 2 -> unicode61'),
    (dict(extra={'course': TextField()}), 'ddl: CREATE VIRTUAL TABLE'),
    (dict(extra={'embedding': VectorField(8, metric='cosine', quantize='bit',
                                          bits=2)}),
     'vectors.embedding.bits: None -> 2'),
])
def test_a_changed_setup_is_detected_at_start_up(app, change, message):
    db, _ = app
    dims = change.pop('dims', 8)
    embedder = counting_embedder(dims, change.pop('model', 'hash-v1'))
    before = db.execute_sql('select count(*) from notevec').fetchone()
    with pytest.raises(SchemaChanged) as info:
        start(db, embedder, dims=dims, **change)
    assert message in str(info.value)
    assert 'on_schema_change = "rebuild"' in str(info.value)
    # Nothing was dropped or changed.
    assert db.execute_sql('select count(*) from notevec').fetchone() == \
        before
    assert db.execute_sql('select count(*) from note').fetchone()[0] == 40


def test_fields_in_another_order_are_no_change(db):
    def declare(order):
        fields = {'embedding': VectorField(4), 'course': TextField(),
                  'year': IntegerField()}
        return type('Doc', (VecModel,), dict(
            [(name, fields[name]) for name in order],
            Meta=type('Meta', (), {'database': db, 'table_name': 'doc'})))
    Doc = declare(['embedding', 'course', 'year'])
    db.create_tables([Doc])
    Doc.create(rowid=1, embedding=[1, 0, 0, 0], course='ml', year=2024)
    Doc = declare(['year', 'course', 'embedding'])
    db.create_tables([Doc])               # No SchemaChanged.
    Doc.create(rowid=2, embedding=[0, 1, 0, 0], course='de', year=2025)
    assert [(r.rowid, r.course, r.year) for r in Doc.knn(
        [1, 0, 0, 0], k=2).where(Doc.year >= 2024)] == [
            (1, 'ml', 2024), (2, 'de', 2025)]
    with pytest.raises(SchemaChanged, match='ddl'):
        db.create_tables([declare(['embedding', 'course'])])


def test_library_upgrade_alone_is_not_a_change(app):
    db, _ = app
    fingerprint, _ = stored(db, 'notevec')
    fingerprint['library'] = '0.0.1'
    del fingerprint['content']      # Versions before it was recorded.
    db.execute_sql('update playhouse_vec_schema set fingerprint = ? '
                   'where "index" = ?', (json.dumps(fingerprint),
                                         'notevec'))
    start(db, counting_embedder())


def test_rebuild_after_a_metric_change_reuses_cached_embeddings(app):
    db, old = app
    content = db.execute_sql('select * from note order by id').fetchall()
    embedder = counting_embedder()
    Note, NoteVec, NoteFTS = start(db, embedder, metric='l2',
                                   policy='rebuild')
    assert embedder.calls == 0       # Same model, same texts: the cache.
    assert stored(db, 'notevec')[0]['vectors']['embedding']['metric'] == \
        'l2'
    assert stored(db, 'notevec')[1] == 'ready'
    assert 'distance_metric=l2' in db.execute_sql(
        "select sql from sqlite_master where name = 'notevec'").fetchone()[0]
    assert NoteVec.check_index().ok
    assert db.execute_sql('select * from note order by id').fetchall() == \
        content                      # The content is never modified.
    row = NoteVec.search('note about topic 3', k=1).get()
    assert row.rowid == 4 and row.distance < 1e-6


def test_rebuild_after_a_model_change_re_embeds_everything(app):
    db, _ = app
    embedder = counting_embedder(16, 'hash-v2')
    Note, NoteVec, _ = start(db, embedder, dims=16, policy='rebuild')
    assert embedder.calls == 40
    assert NoteVec.check_index().ok
    assert NoteVec.get_by_id(1).embedding.shape == (16,)


def test_rebuild_of_the_fts_index_after_a_tokenizer_change(app):
    db, _ = app
    Note, NoteVec, NoteFTS = start(db, counting_embedder(),
                                   tokenize='unicode61', policy='rebuild')
    assert NoteFTS.search('topic', k=100).count() == 40
    assert NoteFTS.search('topics', k=100).count() == 0   # No stemming.
    assert NoteFTS.check_index().ok
    Note.create(title='a new topic')          # Triggers are back.
    assert NoteFTS.search('new').count() == 1


def test_rebuild_without_an_embedder_is_refused(db):
    Note, NoteVec, _ = start(db, None)
    NoteVec.create(rowid=1, embedding=np.ones(8))
    with pytest.raises(Exception, match='no Meta.embedder'):
        start(db, None, dims=4, policy='rebuild')
    assert NoteVec.select().count() == 1


def test_tables_made_before_fingerprints_are_adopted_or_refused(db):
    db.execute_sql('create table note (id integer primary key, title text, '
                   'course text)')
    db.execute_sql('create virtual table "notevec" using vec0 (embedding '
                   'float[8] distance_metric=cosine, chunk_size=1024)')
    start(db, counting_embedder())                 # Same DDL: adopted.
    assert stored(db, 'notevec')[1] == 'ready'
    other = register_database(new_database())
    other.execute_sql('create virtual table "notevec" using vec0 ('
                      'embedding float[8] distance_metric=l2)')
    with pytest.raises(SchemaChanged, match='ddl'):
        start(other, counting_embedder())


def test_unknown_old_settings_are_refilled_not_copied(db):
    # A table without a fingerprint whose vectors have another size: its
    # rows cannot be copied into the new table; the content refills it.
    db.execute_sql('create table note (id integer primary key, title text, '
                   'course text)')
    db.execute_sql('create virtual table "notevec" using vec0 (embedding '
                   'float[4] distance_metric=cosine)')
    db.execute_sql('insert into note (id, title) values (1, \'a\'), '
                   '(2, \'b\')')
    db.execute_sql('insert into notevec (rowid, embedding) values '
                   '(1, \'[1, 0, 0, 0]\'), (2, \'[0, 1, 0, 0]\')')
    embedder = counting_embedder()
    Note, NoteVec, _ = start(db, embedder, policy='rebuild')
    assert embedder.calls == 2
    assert [len(r.embedding) for r in NoteVec.select()] == [8, 8]
    assert NoteVec.check_index().ok


def test_rows_deleted_during_a_rebuild_lose_their_vectors(app):
    db, _ = app
    embedder = counting_embedder(16, 'hash-v2')
    original = embedder.function

    def delete_while_embedding(texts):
        # Another connection deletes a row whose batch is written already.
        if embedder.calls == 10:
            other = register_database(new_database(db.database))
            other.execute_sql('delete from note where id = 1')
            other.close()
        return original(texts)
    embedder.function = delete_while_embedding
    Note, NoteVec, _ = models(db, embedder, dims=16, policy='rebuild')
    NoteVec._meta.batch_size = 10
    db.create_tables([Note, NoteVec])
    assert Note.select().count() == 39
    assert NoteVec.check_index().ok and not NoteVec.check_index().extra


def test_a_new_content_model_is_a_change(app):
    # The triggers stayed on the old content table.
    db, _ = app

    class Article(Model):
        title = TextField()

        class Meta:
            database = db

    db.create_tables([Article])
    Article.insert_many([{'title': 'article %d' % i} for i in range(3)]
                        ).execute()

    def declare(policy):
        return type('NoteVec', (VecModel,), {
            'embedding': VectorField(8, metric='cosine'),
            'Meta': type('Meta', (), dict(
                database=db, table_name='notevec', content=Article,
                embed='title', embedder=counting_embedder(),
                on_schema_change=policy))})
    Note = models(db)[0]
    with pytest.raises(SchemaChanged, match='content: note.id -> article.id'):
        db.create_tables([declare('raise')])
    NoteVec = declare('rebuild')
    db.create_tables([NoteVec])
    assert NoteVec.select().count() == 3
    Note.delete().execute()
    Article.delete().where(Article.id == 2).execute()
    assert sorted(r.rowid for r in NoteVec.select()) == [1, 3]
    assert NoteVec.check_index().ok


def test_interrupted_rebuild_resumes_at_the_next_start_up(app):
    db, _ = app
    failing = counting_embedder(16, 'hash-v2')
    original = failing.function

    def fail_after_some(texts):
        if failing.calls >= 10:
            raise RuntimeError('killed')
        return original(texts)
    failing.function = fail_after_some
    Note, NoteVec, _ = models(db, failing, dims=16, policy='rebuild')
    NoteVec._meta.batch_size = 10
    with pytest.raises(RuntimeError, match='killed'):
        db.create_tables([Note, NoteVec])
    assert stored(db, 'notevec')[1] == 'building'
    done = NoteVec.select().count()
    assert 0 < done < 40
    embedder = counting_embedder(16, 'hash-v2')
    Note, NoteVec, _ = start(db, embedder, dims=16, policy='rebuild')
    assert stored(db, 'notevec')[1] == 'ready'
    assert embedder.calls == 40 - done   # Only what was missing.
    assert NoteVec.check_index().ok


def test_compact_reclaims_space_and_keeps_rows(tmp_path):
    path = str(tmp_path / 'compact.db')
    db = new_database(path)

    class Item(VecModel):
        embedding = VectorField(256)
        codes = VectorField(16, element_type='int8')
        title = TextField()

        class Meta:
            database = db

    db.create_tables([Item])
    rng = np.random.default_rng(0)
    with db.atomic():
        Item.insert_many([dict(embedding=rng.normal(size=256),
                               codes=rng.integers(-100, 100, 16),
                               title='t%d' % i) for i in range(8000)]
                         ).execute()
    Item.delete().where(Item.rowid.in_(list(range(2, 8001, 2)))).execute()
    db.execute_sql('VACUUM')
    size = os.path.getsize(path)
    query = rng.normal(size=256)
    before = [(r.rowid, r.distance) for r in Item.knn(query, k=5,
                                                      field=Item.embedding)]
    assert Item.compact() == 4000
    assert os.path.getsize(path) < 0.7 * size
    assert [(r.rowid, r.distance) for r in Item.knn(
        query, k=5, field=Item.embedding)] == before
    assert Item.get_by_id(3).title == 't2'
    assert Item.get_by_id(3).codes.dtype == np.int8
    db.close()


def hand_filled(db, policy='rebuild', **field):
    """A VecModel whose vectors were inserted by hand (no embedder)."""
    field.setdefault('metric', 'cosine')
    Doc = type('Doc', (VecModel,), {
        'embedding': VectorField(16, **field), 'course': TextField(),
        'Meta': type('Meta', (), {'database': db, 'table_name': 'doc',
                                  'on_schema_change': policy})})
    db.create_tables([Doc])
    return Doc


@pytest.mark.parametrize('before, after', [
    (dict(quantize='bit', bits=1), dict(quantize='bit', bits=4)),
    (dict(), dict(lists=4, probes=4)),
    (dict(lists=4, quantize='bit'), dict(metric='l2')),
])
def test_index_options_are_rebuilt_from_the_stored_vectors(db, before,
                                                           after):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    Doc = hand_filled(db, **before)
    Doc.insert_many([{'rowid': i + 1, 'embedding': v, 'course': 'c%d' % (
        i % 3)} for i, v in enumerate(vectors)]).execute()
    Doc.train()
    with pytest.raises(SchemaChanged):
        hand_filled(db, policy='raise', **after)
    New = hand_filled(db, **after)          # No embedder, nothing lost.
    rows = list(New.select().order_by(New.rowid))
    assert len(rows) == 300
    np.testing.assert_array_equal(np.stack([r.embedding for r in rows]),
                                  vectors)
    assert [r.course for r in rows][:4] == ['c0', 'c1', 'c2', 'c0']
    # Retrained for the new options, and searching with them.
    if New._vec.trained:
        assert New.center(New.embedding) is not None
    if after.get('bits'):
        assert len(rows[0].embedding_bits) == 64
    metric = after.get('metric', 'cosine')
    q = vectors[7]
    truth = brute_force(vectors, q, metric)
    found = [(r.rowid, r.distance) for r in New.knn(q, k=5)]
    assert found[0][0] == 8 and abs(found[0][1]) < 1e-5
    np.testing.assert_allclose([d for _, d in found],
                               truth[[i - 1 for i, _ in found]], atol=1e-5)
    assert stored(db, 'doc')[0]['vectors']['embedding'] == dict(
        New.fingerprint()['vectors']['embedding'])
    hand_filled(db, policy='raise', **after)    # Settled: no change now.


@pytest.mark.parametrize('before, after, values, expected', [
    (TextField, IntegerField, ['7', '-2', '10'], [7, -2, 10]),
    (IntegerField, TextField, [7, -2, 10], ['7', '-2', '10']),
    (TextField, FloatField, ['1.5', '2', '-0.25'], [1.5, 2.0, -0.25]),
    (IntegerField, BooleanField, [1, 0, 1], [True, False, True]),
])
def test_a_column_type_change_converts_the_stored_values(db, before, after,
                                                         values, expected):
    def declare(field_class, policy='rebuild'):
        return type('Doc', (VecModel,), {
            'embedding': VectorField(4), 'level': field_class(),
            'Meta': type('Meta', (), {'database': db, 'table_name': 'doc',
                                      'on_schema_change': policy})})
    Doc = declare(before)
    db.create_tables([Doc])
    Doc.insert_many([{'rowid': i + 1, 'embedding': [i, 0, 0, 1], 'level': v}
                     for i, v in enumerate(values)]).execute()
    with pytest.raises(SchemaChanged, match='ddl'):
        db.create_tables([declare(after, 'raise')])
    New = declare(after)
    db.create_tables([New])
    rows = list(New.select().order_by(New.rowid))
    assert [r.level for r in rows] == expected
    typeof = {'TEXT': 'text', 'FLOAT': 'real'}.get(
        New.level.field_type, 'integer')
    assert db.execute_sql('select distinct typeof(level) from doc'
                          ).fetchall() == [(typeof,)]
    assert [r.rowid for r in New.knn([0, 0, 0, 1], k=1)] == [1]


@pytest.mark.parametrize('before, after, value', [
    (TextField, IntegerField, 'x'),
    (FloatField, IntegerField, 2.5),
    (IntegerField, BooleanField, 2),
    (TextField, FloatField, '1e3'),
])
def test_a_type_change_that_would_lose_values_keeps_the_table(
        db, before, after, value):
    Doc = type('Doc', (VecModel,), {
        'embedding': VectorField(4), 'level': before(),
        'Meta': type('Meta', (), {'database': db, 'table_name': 'doc'})})
    db.create_tables([Doc])
    Doc.insert_many([{'rowid': 1, 'embedding': [1, 0, 0, 0],
                      'level': before().python_value(0)},
                     {'rowid': 2, 'embedding': [0, 1, 0, 0],
                      'level': value}]).execute()
    fingerprint = stored(db, 'doc')
    New = type('Doc', (VecModel,), {
        'embedding': VectorField(4), 'level': after(),
        'Meta': type('Meta', (), {'database': db, 'table_name': 'doc',
                                  'on_schema_change': 'rebuild'})})
    with pytest.raises(SchemaChanged) as info:
        db.create_tables([New])
    assert 'column level holds %r (rowid 2)' % (value,) in str(info.value)
    assert stored(db, 'doc') == fingerprint
    assert db.execute_sql('select rowid, level from doc order by rowid'
                          ).fetchall() == [(1, before().db_value(0)),
                                           (2, value)]
    db.create_tables([Doc])     # The old declaration still fits.


def test_a_type_change_the_rows_cannot_take_is_filled_from_content(db):
    embedder = counting_embedder()
    Note, NoteVec, _ = start(db, embedder,
                             extra={'flag': TextField(default='yes')})
    Note.insert_many([{'title': 'note %d' % i} for i in range(5)]).execute()
    NoteVec.index()
    assert [r.flag for r in NoteVec.select()] == ['yes'] * 5
    calls = embedder.calls
    _, NoteVec, _ = start(db, embedder, policy='rebuild',
                          extra={'flag': BooleanField(default=True)})
    assert embedder.calls == calls      # Re-filled from the cache.
    assert [r.flag for r in NoteVec.select()] == [True] * 5
    assert stored(db, 'notevec')[1] == 'ready'


def test_a_rebuilt_fts_index_syncs_its_new_columns(db):
    class Note(Model):
        title = TextField()
        course = TextField()

        class Meta:
            database = db
            table_name = 'note'

    def index(*columns):
        attrs = dict((c, SearchField()) for c in columns)
        attrs['Meta'] = type('Meta', (), {
            'database': db, 'table_name': 'notefts', 'content': Note,
            'on_schema_change': 'rebuild'})
        NoteFTS = type('NoteFTS', (FTSModel,), attrs)
        db.create_tables([Note, NoteFTS])
        return NoteFTS

    index('title')
    Note.create(title='first', course='alpha')
    NoteFTS = index('title', 'course')
    Note.create(title='second', course='beta')     # Synced with course.
    assert [n.title for n in NoteFTS.search('beta')] == ['second']
    assert [n.title for n in NoteFTS.search('alpha')] == ['first']
    NoteFTS = index('title')
    Note.create(title='third', course='gamma')     # No course column now.
    assert [n.title for n in NoteFTS.search('third')] == ['third']
    assert NoteFTS.check_index().ok


def test_int8_on_or_off_refills_from_the_content(app):
    db, _ = app
    for options in (dict(quantize='int8'), dict()):
        embedder = counting_embedder()
        _, NoteVec, _ = start(db, embedder, policy='rebuild', extra={
            'embedding': VectorField(8, metric='cosine', **options)})
        assert embedder.calls == 0          # From the cache.
        assert NoteVec.select().count() == 40
        assert NoteVec.get().embedding.dtype == (
            np.int8 if options else np.float32)
    # Without an embedder the floats cannot be made again: nothing changes.
    Doc = hand_filled(db)
    Doc.create(rowid=1, embedding=np.ones(16), course='a')
    with pytest.raises(Exception, match='no Meta.embedder'):
        hand_filled(db, quantize='int8')
    assert Doc.get().embedding.dtype == np.float32


def test_new_columns_still_need_the_content(db):
    Doc = hand_filled(db)
    Doc.create(rowid=1, embedding=np.ones(16), course='a')
    New = type('Doc', (VecModel,), {
        'embedding': VectorField(16, metric='cosine'),
        'course': TextField(), 'level': TextField(),
        'Meta': type('Meta', (), {'database': db, 'table_name': 'doc',
                                  'on_schema_change': 'rebuild'})})
    with pytest.raises(Exception, match='no Meta.embedder'):
        db.create_tables([New])
    assert Doc.select().count() == 1


def test_library_tables_follow_a_database_moved_to_another_file(tmp_path):
    # db.init(path) (Flask app factories) or a reopened :memory: database
    # (test fixtures) reach a database without the library's tables.
    from peewee import SqliteDatabase
    db = SqliteDatabase(None)
    for path in (str(tmp_path / 'a.db'), str(tmp_path / 'b.db'),
                 ':memory:', ':memory:'):
        db.init(path)
        Note, NoteVec, NoteFTS = start(db, counting_embedder())
        Note.create(title='hello')
        assert NoteVec.index().embedded == 1
        assert [n.title for n in NoteFTS.search('hello')] == ['hello']
        db.close()
