import sqlite3
import subprocess
import sys
import textwrap
import threading

import peewee
import pytest
from peewee import DatabaseProxy
from peewee import ImproperlyConfigured
from peewee import Model
from playhouse.pool import PooledSqliteDatabase
from playhouse.sqliteq import SqliteQueueDatabase

from playhouse_vec import FTSModel
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import register_database

from conftest import new_database


def vec_version(database):
    return database.execute_sql('select vec_version()').fetchone()[0]


def test_plain_database_loads_on_every_connection(tmp_path):
    db = new_database(str(tmp_path / 'a.db'))
    register_database(db)
    assert vec_version(db).startswith('v0.1')
    db.close()
    assert vec_version(db).startswith('v0.1')  # A new connection.
    found = []
    thread = threading.Thread(target=lambda: found.append(vec_version(db)))
    thread.start()
    thread.join()
    assert found and found[0].startswith('v0.1')
    db.close()


def test_declaring_a_model_registers_the_database(tmp_path):
    db = new_database(str(tmp_path / 'b.db'))

    class Item(VecModel):
        embedding = VectorField(2)

        class Meta:
            database = db

    assert vec_version(db).startswith('v0.1')
    db.close()


def test_vector_field_on_ordinary_model_registers(tmp_path):
    db = new_database(str(tmp_path / 'c.db'))

    class Doc(Model):
        embedding = VectorField(2)

        class Meta:
            database = db

    assert vec_version(db)
    db.close()


def test_registering_an_open_connection(tmp_path):
    db = new_database(str(tmp_path / 'd.db'))
    db.connect()
    register_database(db)
    register_database(db)  # Idempotent.
    assert vec_version(db)
    db.close()


def test_sql_load_extension_is_disabled_afterwards(db):
    with pytest.raises(peewee.OperationalError, match='not authorized'):
        db.execute_sql("select load_extension('whatever')")


def test_pooled_database(tmp_path):
    db = PooledSqliteDatabase(str(tmp_path / 'p.db'), max_connections=4,
                              check_same_thread=False)
    db.connect()
    db.close()  # An idle pooled connection opened before registration...
    register_database(db)
    assert vec_version(db)  # ...is not reused without sqlite-vec.
    db.close()
    assert vec_version(db)
    db.close_all()


def test_queue_database(tmp_path):
    db = SqliteQueueDatabase(str(tmp_path / 'q.db'), autostart=False)

    class Item(VecModel):
        embedding = VectorField(2)

        class Meta:
            database = db

    db.start()
    try:
        db.create_tables([Item])
        Item.insert(embedding=[1, 0]).execute()
        Item.insert(embedding=[0, 1]).execute()
        # Writes run in the queue's thread; wait until both are in.
        for _ in range(100):
            if Item.select().count() == 2:
                break
            threading.Event().wait(0.05)
        rows = list(Item.knn([0.9, 0.1], k=1))
        assert rows[0].rowid == 1
    finally:
        db.stop()
        db.close()


def test_queue_database_trains_searches_and_rolls_back(tmp_path):
    # The queue sends statements not starting with SELECT to its writer:
    # WITH ... searches and multi-statement writes must not go there.
    import numpy as np
    from peewee import TextField
    from playhouse_vec import FTSModel
    from playhouse_vec import SearchField
    from playhouse_vec import hybrid_search
    from playhouse_vec.database import atomic

    db = SqliteQueueDatabase(str(tmp_path / 'q.db'))

    class Doc(Model):
        title = TextField()

        class Meta:
            database = db

    class DocVec(VecModel):
        embedding = VectorField(8, quantize='bit', lists=4, probes=4,
                                oversample=64)

        class Meta:
            database = db
            content = Doc

    class DocFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = db
            content = Doc

    try:
        db.create_tables([Doc, DocVec, DocFTS])
        rng = np.random.default_rng(3)
        vectors = rng.normal(size=(300, 8))
        with atomic(db):
            for i, vector in enumerate(vectors, 1):
                Doc.insert(id=i, title='doc %d' % i).execute()
                DocVec.insert(rowid=i, embedding=vector).execute()
        DocVec.train(vacuum=False)
        lists = set(r for (r,) in DocVec.select(
            DocVec.embedding_list).tuples())
        assert lists == {0, 1, 2, 3}     # Every row moved to its list.
        q = vectors[41]
        assert [r.rowid for r in DocVec.knn(q, k=3)][0] == 42
        assert DocVec.knn(q, k=3).limit(1).get().rowid == 42
        found = hybrid_search(DocVec, DocFTS, text='doc 42', vector=q, k=3)
        assert [d.id for d in found][0] == 42
        with pytest.raises(RuntimeError):
            with atomic(db):
                Doc.insert(id=1000, title='kept').execute()
                with pytest.raises(KeyError):
                    with atomic(db):
                        Doc.insert(id=1001, title='undone').execute()
                        raise KeyError
                assert Doc.select().where(Doc.id >= 1000).count() == 1
                raise RuntimeError
        assert not Doc.select().where(Doc.id >= 1000).exists()
    finally:
        db.stop()
        db.close()


@pytest.mark.skipif(not hasattr(__import__('playhouse.sqlite_ext').sqlite_ext,
                                'SqliteExtDatabase'),
                    reason='SqliteExtDatabase was removed in Peewee 4')
def test_sqlite_ext_database_on_peewee_3(tmp_path):
    from playhouse.sqlite_ext import SqliteExtDatabase
    db = SqliteExtDatabase(str(tmp_path / 'e.db'))
    register_database(db)
    assert vec_version(db)
    db.close()


def test_database_proxy(tmp_path):
    proxy = DatabaseProxy()

    class Item(VecModel):
        embedding = VectorField(2)

        class Meta:
            database = proxy

    db = new_database(str(tmp_path / 'x.db'))
    proxy.initialize(db)
    assert vec_version(db)
    db.close()


def test_a_whole_app_on_a_database_proxy(tmp_path):
    from peewee import TextField
    from playhouse_vec import FTSModel, SearchField, hybrid_search
    from conftest import counting_embedder
    proxy = DatabaseProxy()         # Flask-style: initialized later.

    class Note(Model):
        title = TextField()

        class Meta:
            database = proxy

    class NoteVec(VecModel):
        embedding = VectorField(8, metric='cosine', lists=4, probes=1)

        class Meta:
            database = proxy
            content = Note
            embedder = counting_embedder()
            embed = 'title'

    class NoteFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = proxy
            content = Note

    db = new_database(str(tmp_path / 'app.db'))
    proxy.initialize(db)
    proxy.create_tables([Note, NoteVec, NoteFTS])
    Note.insert_many([{'title': 'note %d about %s' % (i, ['ml', 'sql'][i % 2])}
                      for i in range(300)]).execute()
    assert NoteVec.index().embedded == 300
    assert NoteVec.center(NoteVec.embedding) is not None    # Trained.
    assert NoteVec.check_index().ok and NoteFTS.check_index().ok
    assert len(list(NoteVec.search('note 7 about sql', k=5))) == 5
    rows = list(hybrid_search(NoteVec, NoteFTS, text='sql', k=3))
    assert len(rows) == 3 and all(r.fts_rank for r in rows)
    proxy.create_tables([Note, NoteVec, NoteFTS])     # Next start-up.
    db.close()


def test_a_proxy_initialized_again_registers_its_new_database(tmp_path):
    from peewee import TextField
    proxy = DatabaseProxy()
    proxy.initialize(new_database(str(tmp_path / 'first.db')))

    class Note(Model):
        title = TextField()

        class Meta:
            database = proxy

    class NoteVec(VecModel):
        embedding = VectorField(2)

        class Meta:
            database = proxy
            content = Note

    proxy.close()
    db = new_database(str(tmp_path / 'second.db'))   # A test fixture swap.
    proxy.initialize(db)
    proxy.create_tables([Note, NoteVec])
    NoteVec.create(rowid=Note.create(title='x').id, embedding=[1, 0])
    assert [r.rowid for r in NoteVec.knn([1, 0], k=1)] == [1]
    assert db.execute_sql('PRAGMA recursive_triggers').fetchone() == (1,)
    db.close()


def test_sync_triggers_work_where_create_tables_is_not_called(tmp_path):
    # One process makes the tables; another (a web worker) only declares
    # the models. A REPLACE there fires the content's DELETE triggers.
    from notes_app import app
    path = str(tmp_path / 'app.db')
    setup, Note, NoteFTS, NoteVec = app(path, 'hash-v1')
    setup.create_tables([Note, NoteFTS, NoteVec])
    Note.create(title='apple')
    setup.close()
    worker, Note, NoteFTS, NoteVec = app(path, 'hash-v1')
    Note.replace(id=1, title='banana').execute()
    assert [n.title for n in NoteFTS.search('apple')] == []
    assert [n.title for n in NoteFTS.search('banana')] == ['banana']
    assert NoteFTS.check_index().ok
    worker.close()


def test_bind_registers(tmp_path):
    class Item(VecModel):
        embedding = VectorField(2)

    db = new_database(str(tmp_path / 'bind.db'))
    Item.bind(db)
    assert vec_version(db)
    db.close()


def test_models_bound_later_get_recursive_triggers(tmp_path):
    # Declared without a database, then bound: the FTS index's triggers
    # need recursive_triggers for a REPLACE on the content table.
    class Note(Model):
        title = peewee.TextField()

    class NoteFTS(FTSModel):
        title = SearchField()

        class Meta:
            content = Note

    db = new_database(str(tmp_path / 'later.db'))
    db.bind([Note, NoteFTS])
    db.create_tables([Note, NoteFTS])
    db.close()
    worker = new_database(str(tmp_path / 'later.db'))
    worker.bind([Note, NoteFTS])
    Note.create(title='apple')
    Note.replace(id=1, title='banana').execute()
    assert worker.execute_sql('pragma recursive_triggers').fetchone() == (1,)
    assert [n.title for n in NoteFTS.search('apple')] == []
    assert NoteFTS.check_index().ok
    worker.close()


def test_connections_open_before_registration_are_set_up(tmp_path):
    # Another thread's open connection, and a pooled one checked out then,
    # get sqlite-vec before their next statement.
    for db in (new_database(str(tmp_path / 'a.db'), check_same_thread=False),
               PooledSqliteDatabase(str(tmp_path / 'b.db'),
                                    max_connections=2,
                                    check_same_thread=False)):
        opened, registered, found = (threading.Event(), threading.Event(),
                                     [])

        def worker():
            db.connect()
            opened.set()
            registered.wait()
            found.append(vec_version(db))
            db.close()
        thread = threading.Thread(target=worker)
        thread.start()
        opened.wait()
        register_database(db)
        registered.set()
        thread.join()
        assert found[0].startswith('v0.1')
        later = []
        thread = threading.Thread(target=lambda: later.append(
            vec_version(db)))
        thread.start()
        thread.join()
        assert later[0].startswith('v0.1')
        db.close_all() if hasattr(db, 'close_all') else db.close()


def test_queue_writer_connected_before_the_models(tmp_path):
    # The queue's writer thread connects as it starts, before the models
    # (and sqlite-vec) come: its statements need vec0 all the same.
    db = SqliteQueueDatabase(str(tmp_path / 'q.db'))
    try:
        for _ in range(100):       # Until the writer has connected.
            if not db.is_stopped() and db._writer is not None and \
                    db._writer.is_alive():
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.1)

        class Item(VecModel):
            embedding = VectorField(2)

            class Meta:
                database = db

        db.create_tables([Item])
        Item.insert(rowid=1, embedding=[1, 0]).execute()
        Item.delete().where(Item.rowid == 1).execute()
        for _ in range(100):
            if Item.select().count() == 0:
                break
            threading.Event().wait(0.05)
        assert Item.select().count() == 0
    finally:
        db.stop()


def test_proxies_are_told_apart_after_others_are_gone(tmp_path):
    # A new proxy may get the id() of one that was collected.
    for _ in range(200):
        register_database(DatabaseProxy())
    proxy = DatabaseProxy()
    register_database(proxy)
    proxy.initialize(new_database(str(tmp_path / 'p.db')))
    assert vec_version(proxy)
    proxy.close()


def test_non_sqlite_database_is_rejected():
    db = peewee.PostgresqlDatabase(None)
    with pytest.raises(ImproperlyConfigured, match='SQLite database'):
        register_database(db)


@pytest.mark.skipif(hasattr(sqlite3.Connection, 'enable_load_extension'),
                    reason='this Python can load extensions')
def test_this_python_stdlib_driver_gets_a_clear_error(tmp_path):
    # A real stdlib connection of a Python built without extension loading
    # (pyenv's default build): ImproperlyConfigured, not AttributeError.
    code = textwrap.dedent('''
        import sqlite3, peewee
        from playhouse_vec.database import load_sqlite_vec
        try:
            load_sqlite_vec(sqlite3.connect(':memory:'))
        except peewee.ImproperlyConfigured as exc:
            print('OK', exc)
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith('OK') and 'pysqlite3-binary' in out


@pytest.mark.skipif(peewee.sqlite3 is sqlite3,
                    reason='only one SQLite library is in use')
def test_second_sqlite_library_is_refused_not_crashed():
    # Peewee uses a bundled driver here; loading sqlite-vec into the stdlib
    # library as well would crash the process. It must raise instead.
    code = textwrap.dedent('''
        import sqlite3, peewee
        from playhouse_vec.database import load_sqlite_vec
        load_sqlite_vec(peewee.sqlite3.connect(':memory:'))
        try:
            load_sqlite_vec(sqlite3.connect(':memory:'))
        except peewee.ImproperlyConfigured as exc:
            print('OK', exc)
    ''')
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('OK') and 'already loaded' in \
        result.stdout


def test_vector_pragmas(tmp_path):
    from playhouse_vec import vector_pragmas
    db = new_database(str(tmp_path / 'tuned.db'), pragmas=vector_pragmas(
        cache_mb=32, mmap_mb=16))
    register_database(db)
    values = dict((name, db.execute_sql('PRAGMA %s' % name).fetchone()[0])
                  for name in ('page_size', 'journal_mode', 'synchronous',
                               'cache_size', 'mmap_size'))
    assert values == {'page_size': 65536, 'journal_mode': 'wal',
                      'synchronous': 1, 'cache_size': -32768,
                      'mmap_size': 16 * 2 ** 20}
    db.execute_sql('CREATE TABLE t (x)')
    db.close()
    # An existing file keeps its page size.
    other = new_database(str(tmp_path / 'tuned.db'),
                         pragmas=vector_pragmas(page_size=4096))
    assert other.execute_sql('PRAGMA page_size').fetchone()[0] == 65536
    other.close()
