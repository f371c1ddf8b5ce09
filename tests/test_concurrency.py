"""
One writer and four readers on one database file, each thread with its own
connection, for about 20 seconds (PLAYHOUSE_VEC_STRESS_SECONDS): no errors,
no lost writes, and every reader sees a consistent index at every moment.
Only the library's defaults are used (WAL; Peewee's 5 s busy timeout).
"""
import os
import threading
import time

import numpy as np

import notes_app
from conftest import hashed_vectors

SECONDS = float(os.environ.get('PLAYHOUSE_VEC_STRESS_SECONDS', 20))
DIMS = notes_app.DIMS


def test_one_writer_four_readers(tmp_path):
    db, Note, NoteFTS, NoteVec = notes_app.app(str(tmp_path / 'stress.db'),
                                               'hash-v1')
    db.create_tables([Note, NoteFTS, NoteVec])
    assert db.execute_sql('pragma journal_mode').fetchone()[0] == 'wal'
    stop = threading.Event()
    errors, written, reads = [], [], [0] * 4

    def writer():
        i = 0
        try:
            while not stop.is_set():
                with db.atomic():       # A note, its text and vector index.
                    for _ in range(5):
                        title = 'note %d word%d' % (i, i % 50)
                        note = Note.create(title=title)
                        vector = hashed_vectors([title], DIMS)[0]
                        NoteVec.create(rowid=note.id, embedding=vector)
                        i += 1
                written.append(i)
                if i % 50 == 0:         # Some deletes and updates too.
                    with db.atomic():
                        Note.delete().where(Note.id == i - 7).execute()
                        Note.update(title=Note.title + ' edited').where(
                            Note.id == i - 3).execute()
        except Exception as exc:        # pragma: no cover - reported below
            errors.append(('writer', repr(exc)))
        finally:
            db.close()

    def reader(n):
        rng = np.random.default_rng(n)
        try:
            while not stop.is_set():
                with db.atomic():       # One snapshot for all the checks.
                    notes = Note.select().count()
                    vectors = NoteVec.select().count()
                    indexed = db.execute_sql(
                        'select count(*) from notefts_docsize').fetchone()[0]
                    if not notes == vectors == indexed:
                        errors.append(('snapshot', notes, vectors, indexed))
                    rows = list(NoteVec.knn(rng.normal(size=DIMS), k=5)
                                .where(Note.title.contains('word')))
                    if len(rows) != min(5, notes):
                        errors.append(('knn', len(rows), notes))
                    hits = list(NoteFTS.search('word%d' % rng.integers(50),
                                               k=3))
                    if any(h.id is None for h in hits):
                        errors.append(('fts', hits))
                reads[n] += 1
        except Exception as exc:        # pragma: no cover - reported below
            errors.append(('reader', n, repr(exc)))
        finally:
            db.close()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert all(count > 10 for count in reads), reads
    total = written[-1]
    deleted = len([k for k in range(50, total + 1, 50)])
    assert Note.select().count() == total - deleted      # 0 lost writes
    # The vectors were made by hand, not by NoteVec's embedder: index()
    # would replace them, so check_index() calls them stale.
    report = NoteVec.check_index()
    assert not report.missing and not report.extra and report.stale
    assert NoteFTS.check_index().ok
    db.close()
