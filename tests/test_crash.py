"""
Crash safety: a child process that ingests content and (re-)indexes it is
killed with SIGKILL at random points, then started again; in the end the
content is complete, every index is consistent, and searches return what a
clean build returns.
"""
import random
import signal
import subprocess
import sys
import time

import pytest

import notes_app

CHILD = notes_app.__file__
ROWS = 600


def run(path, model, kill_after=None, rows=ROWS):
    process = subprocess.Popen([sys.executable, CHILD, path, str(rows),
                                model, '--slow'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is None:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
        return True
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate()
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(err.decode())
    return process.returncode == 0


def results(path, model):
    db, Note, NoteFTS, NoteVec = notes_app.app(path, model)
    db.create_tables([Note, NoteFTS, NoteVec])
    assert NoteVec.check_index().ok and NoteFTS.check_index().ok
    state = (
        Note.select().count(),
        [tuple(r) for r in Note.select().order_by(Note.id).tuples()],
        [[(r.rowid, round(r.distance, 6)) for r in NoteVec.search(
            notes_app.title(i), k=5)] for i in (0, 99, 250, 399)],
        [[n.id for n in NoteFTS.search('subject %d' % s, k=5)]
         for s in (3, 17)],
        db.execute_sql('select status from playhouse_vec_schema where '
                       '"index" = ?', ('notevec',)).fetchone()[0])
    db.close()
    return state


@pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')
def test_killed_indexing_and_rebuild_recover(tmp_path):
    rng = random.Random(20261121)
    clean_v1 = str(tmp_path / 'clean1.db')
    clean_v2 = str(tmp_path / 'clean2.db')
    run(clean_v1, 'hash-v1')
    run(clean_v2, 'hash-v2')

    path = str(tmp_path / 'crashy.db')
    kills = 0
    for attempt in range(1, 7):       # Ingest + index, killed at random.
        if not run(path, 'hash-v1', kill_after=rng.uniform(0.3, 0.9),
                   rows=100 * attempt):
            kills += 1
    run(path, 'hash-v1')
    assert kills >= 3
    assert results(path, 'hash-v1') == results(clean_v1, 'hash-v1')

    for attempt in range(5):          # A model change: rebuild, killed.
        if not run(path, 'hash-v2', kill_after=rng.uniform(0.3, 1.2)):
            kills += 1
    run(path, 'hash-v2')
    assert kills >= 6
    state = results(path, 'hash-v2')
    assert state == results(clean_v2, 'hash-v2')
    assert state[0] == ROWS and state[-1] == 'ready'
