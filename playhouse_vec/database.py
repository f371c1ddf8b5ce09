"""
Loading sqlite-vec into the connections of a Peewee database.

Every connection a Peewee ``SqliteDatabase`` (plain, pooled, queued, or the
Peewee 3 ``SqliteExtDatabase``) opens gets sqlite-vec through one helper,
:func:`register_database`. Models that use this library call it for you when
they are bound to a database, so most programs never call it themselves::

    db = SqliteDatabase('notes.db')
    register_database(db)       # optional: VecModel / VectorField do it
    db.connect()
    db.execute_sql('select vec_version()').fetchone()

Extension loading is switched off again once sqlite-vec is in, so SQL cannot
call ``load_extension()`` afterwards.
"""
import contextlib
import threading

from peewee import ImproperlyConfigured
from peewee import Proxy
from peewee import SqliteDatabase
from playhouse.sqliteq import SqliteQueueDatabase
import sqlite_vec


MIN_SQLITE_VERSION = (3, 38, 0)

_lock = threading.Lock()
_loaded_library = None  # The one SQLite library sqlite-vec went into.

NO_EXTENSION_LOADING = (
    'The SQLite driver in use (%s, SQLite %s) cannot load extensions, so '
    'sqlite-vec cannot be loaded. Fix: install playhouse_vec with pip on '
    'Linux x86_64, which brings pysqlite3-binary (a driver that bundles '
    'SQLite and that Peewee picks up by itself), or "pip install '
    'pysqlite3-binary"; elsewhere, use a Python whose sqlite3 module can '
    'load extensions (python.org on Windows, Homebrew, uv-managed Python, '
    'Debian/Ubuntu python3, the Docker python images, or pyenv with '
    'PYTHON_CONFIGURE_OPTS="--enable-loadable-sqlite-extensions").')


def _library_of(conn):
    # The C type the connection comes from, e.g. "sqlite3.Connection" or
    # "pysqlite3.dbapi2.Connection": one per SQLite library in the process.
    for klass in type(conn).__mro__:
        if klass.__module__ not in (None, 'builtins'):
            base = klass
    return '%s.%s' % (base.__module__, base.__name__)


def load_sqlite_vec(conn):
    """Load sqlite-vec into one DB-API connection, then forbid loading."""
    global _loaded_library
    library = _library_of(conn)
    with _lock:
        if _loaded_library is not None and _loaded_library != library:
            raise ImproperlyConfigured(
                'sqlite-vec is already loaded into %s in this process; '
                'loading it into a second SQLite library (%s) crashes the '
                'process. Use one driver for every database that needs '
                'sqlite-vec.' % (_loaded_library, library))
        if not hasattr(conn, 'enable_load_extension'):
            version = conn.execute('select sqlite_version()').fetchone()[0]
            raise ImproperlyConfigured(
                NO_EXTENSION_LOADING % (library, version))
        conn.enable_load_extension(True)
        try:
            sqlite_vec.load(conn)
        finally:
            conn.enable_load_extension(False)
        _loaded_library = library


def check_sqlite_version(database):
    """Raise ImproperlyConfigured if the driver's SQLite is too old."""
    version = database.server_version
    if version < MIN_SQLITE_VERSION:
        raise ImproperlyConfigured(
            'playhouse_vec needs SQLite %s or newer, but the driver in use '
            'has %s. Install pysqlite3-binary or use a newer Python.' % (
                '.'.join(map(str, MIN_SQLITE_VERSION)),
                '.'.join(map(str, version))))


def resolved(database):
    """The database a ``DatabaseProxy`` stands for (the database itself
    otherwise)."""
    if isinstance(database, Proxy):
        if database.obj is None:
            raise ImproperlyConfigured(
                'The DatabaseProxy is not initialized yet: call '
                'proxy.initialize(database) before using its models.')
        return database.obj
    return database


def register_database(database, recursive_triggers=False):
    """
    Make every connection of ``database`` load sqlite-vec. Idempotent.

    Connections also get ``journal_mode=WAL`` unless the database's
    ``pragmas`` set a journal mode: readers then never block the writer.
    With ``recursive_triggers=True`` they also get ``PRAGMA
    recursive_triggers = ON``, which index-sync triggers need: without it
    a REPLACE on the content table deletes the old row without firing its
    DELETE triggers.

    Works with any ``SqliteDatabase`` subclass (pools, ``SqliteQueueDatabase``,
    ``SqliteExtDatabase``) and with a ``DatabaseProxy`` (every database it
    is initialized with, now or later). Connections opened before, in any
    thread or pool (a queue's writer thread, say), are set up before their
    next statement.
    """
    if isinstance(database, Proxy):
        # The settings live in the proxy's own callback (an id() of a
        # proxy may name another one once it is gone).
        callback = next((c for c in database._callbacks
                         if hasattr(c, 'vec_settings')), None)
        if callback is None:
            def callback(obj):
                register_database(obj, callback.vec_settings['recursive'])
            callback.vec_settings = {'recursive': False}
            database.attach_callback(callback)
        callback.vec_settings['recursive'] |= recursive_triggers
        if database.obj is None:
            return database
    database = resolved(database)
    if database is None:
        return database
    if not getattr(database, '_vec_registered', False):
        _install(database)
    if recursive_triggers:
        _recursive_triggers_on(database)
    return database


def _install(database):
    """Set up every connection of ``database``: each new one as it opens
    (its connection hook is wrapped), and one opened before (in another
    thread or a pool) before its next statement (so is ``cursor()``)."""
    if not isinstance(database, SqliteDatabase):
        raise ImproperlyConfigured(
            'playhouse_vec needs a SQLite database, got %s.'
            % type(database).__name__)
    check_sqlite_version(database)

    def prepare(conn, opened):
        """sqlite-vec and the library's PRAGMAs on one connection, opened
        just now or found open."""
        if opened or not _connection_has_sqlite_vec(conn):
            load_sqlite_vec(conn)
        # (The pragmas as they are now: db.init() may set them later.)
        own_journal = 'journal_mode' in set(name.lower() for name, _ in
                                            database._pragmas)
        if opened and not own_journal:
            # Readers and one writer at once, without "database is
            # locked"; Peewee's timeout=5 makes writers wait for each other.
            # (Not on a connection found open: it may be reading.)
            conn.execute('PRAGMA journal_mode = WAL')
        recursive = getattr(database, '_vec_recursive_triggers', False)
        if recursive:
            conn.execute('PRAGMA recursive_triggers = ON')
        database._state.vec_prepared = (conn, recursive)

    add_conn_hooks = database._add_conn_hooks

    def _add_conn_hooks(conn):
        add_conn_hooks(conn)
        prepare(conn, True)
        # A new connection may open another file (db.init(path)) or a
        # fresh :memory: database: the library's tables are checked again.
        database._vec_connections = getattr(database, '_vec_connections',
                                            0) + 1

    cursor = database.cursor

    def _cursor(*args, **kwargs):
        state = database._state
        conn = state.conn
        if conn is not None and getattr(state, 'vec_prepared', None) != (
                conn, getattr(database, '_vec_recursive_triggers', False)):
            prepare(conn, False)
        return cursor(*args, **kwargs)

    # Peewee has no public per-connection hook; wrapping the instance's
    # own methods keeps the user's database class and settings untouched.
    database._add_conn_hooks = _add_conn_hooks
    database.cursor = _cursor
    if isinstance(database, SqliteQueueDatabase):
        _route_queue(database)
    database._vec_registered = True
    if hasattr(database, 'close_idle'):
        database.close_idle()   # For db.connection().execute() too.
    if not database.is_closed():
        prepare(database.connection(), False)


def _recursive_triggers_on(database):
    """Switch ``PRAGMA recursive_triggers`` on for every connection (each
    before its next statement)."""
    if getattr(database, '_vec_recursive_triggers', False):
        return
    database._vec_recursive_triggers = True
    if not database.is_closed():
        database.cursor()


def vector_pragmas(cache_mb=64, mmap_mb=0, page_size=65536,
                   synchronous='normal'):
    """
    PRAGMAs for a database that holds vectors, for ``SqliteDatabase(path,
    pragmas=...)``::

        db = SqliteDatabase('notes.db', pragmas=vector_pragmas())

    * ``page_size`` (bytes; new files only, see below): vec0 stores vectors
      in chunks of ``chunk_size`` rows, read and written as BLOBs of up to
      about 1 MB; 64 KiB pages make that a few page reads instead of
      hundreds (measured: ingest 1.3x faster, searches of inverted lists
      1.4x faster). SQLite applies it only to a new, empty file; to change
      an existing one, set ``journal_mode=delete``, the page size, run
      ``VACUUM``, then go back to WAL.
    * ``cache_size`` (``cache_mb`` MB of page cache per connection):
      repeated searches stay in memory instead of reading the file.
    * ``mmap_size`` (``mmap_mb`` MB, 0 = off): memory-mapped reads; faster,
      but every page touched counts in the process's resident memory.
    * ``journal_mode=wal`` and ``synchronous`` (``'normal'``: in WAL mode
      the database stays consistent; a power loss may drop the last
      commits).

    Returns a list of (name, value) pairs, in the order SQLite needs.
    """
    return [('page_size', int(page_size)),
            ('journal_mode', 'wal'),
            ('synchronous', synchronous),
            ('cache_size', -1024 * int(cache_mb)),
            ('mmap_size', 1024 * 1024 * int(mmap_mb))]


def key_chunks(keys, size=500):
    """``keys`` in lists of at most ``size``: each list fits one
    ``IN (...)`` under SQLite's bound-parameter limit (999 before 3.32)."""
    keys = list(keys)
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def reclaim_space(database):
    """
    ``VACUUM``: give the pages of deleted rows back to the file system.
    Skipped inside a transaction, where SQLite refuses it (failing would
    roll back the caller's work); the free pages are reused by later
    writes, and the next ``reclaim_space()`` outside a transaction frees them.
    Returns whether it ran.
    """
    database = resolved(database)
    if database.in_transaction() or (
            not database.is_closed() and
            database.connection().in_transaction):
        return False
    database.execute_sql('VACUUM')
    return True


def _connection_has_sqlite_vec(conn):
    try:
        conn.execute('select vec_version()')
    except Exception:
        return False
    return True


def _route_queue(database):
    """Let a thread run statements on its own connection of a
    ``SqliteQueueDatabase`` inside :func:`direct`.

    The queue sends every statement that does not start with SELECT to its
    writer thread: a ``WITH ... SELECT`` search would wait behind writes
    (and its cursor is gone on Peewee 4.5), and statements that must share
    a transaction or a TEMP table would land on two connections.
    """
    queued = database.execute_sql
    own = super(SqliteQueueDatabase, database).execute_sql
    local = database._vec_direct = threading.local()

    def execute_sql(sql, params=None, *args, **kwargs):
        if getattr(local, 'depth', 0):
            return own(sql, params)
        return queued(sql, params, *args, **kwargs)
    database.execute_sql = execute_sql


_NOT_ROUTED = contextlib.nullcontext()


class _Routed(object):
    def __init__(self, local):
        self.local = local

    def __enter__(self):
        self.local.depth = getattr(self.local, 'depth', 0) + 1

    def __exit__(self, *exc_info):
        self.local.depth -= 1


def direct(database):
    """Run this thread's statements on its own connection (on a
    ``SqliteQueueDatabase``; other databases always do)::

        with direct(db):
            cursor = db.execute(search)     # a WITH ... SELECT
    """
    local = getattr(database, '_vec_direct', None)   # Proxies pass it on.
    return _NOT_ROUTED if local is None else _Routed(local)


@contextlib.contextmanager
def _queue_transaction(database):
    # The queue has no transactions of its own; this thread takes SQLite's
    # write lock on its connection (the writer thread waits, up to its
    # busy timeout) and runs every statement there until COMMIT.
    local = database._vec_direct
    level = getattr(local, 'transactions', 0)
    savepoint = 'playhouse_vec_%d' % level
    if not level and not database.is_stopped():
        # Writes queued before (CREATE TABLE, say) must land first: wait
        # for a no-op queued behind them.
        database.execute_sql('PRAGMA data_version').fetchall()
    with direct(database):
        database.execute_sql('SAVEPOINT %s' % savepoint if level
                             else 'BEGIN IMMEDIATE')
        local.transactions = level + 1
        try:
            yield
        except BaseException:
            if level:
                database.execute_sql('ROLLBACK TO %s' % savepoint)
                database.execute_sql('RELEASE %s' % savepoint)
            elif database.connection().in_transaction:
                database.execute_sql('ROLLBACK')
            raise
        else:
            database.execute_sql('RELEASE %s' % savepoint if level
                                 else 'COMMIT')
        finally:
            local.transactions = level


def atomic(database):
    """A write transaction (a savepoint when nested), begun with
    ``BEGIN IMMEDIATE``: a deferred one that reads first cannot write once
    another connection has committed (SQLite fails it at once instead of
    waiting for the busy timeout).

    On a ``SqliteQueueDatabase``, which has no transactions, the calling
    thread runs the block's statements on its own connection inside
    ``BEGIN IMMEDIATE ... COMMIT``; the writer thread waits meanwhile.
    """
    database = resolved(database)
    if isinstance(database, SqliteQueueDatabase):
        register_database(database)
        return _queue_transaction(database)
    return database.atomic('IMMEDIATE')
