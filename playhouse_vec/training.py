"""
What ``VecModel.train()`` fits to the stored vectors of a VecModel, and
the hidden columns derived from it for each row.

For each vector column with ``quantize='bit'`` or ``lists=N``, the fitted
parts are kept in the ``playhouse_vec_centers`` table: the mean vector
(``center``), the bit thresholds and the list centroids. From them every
row gets its bit codes and its inverted list, and a query its codes and
the lists it probes::

    training = NoteVec._training          # One per VecModel.
    training.train()                      # What NoteVec.train() runs.
    training.part(NoteVec.embedding, 'centroids')     # Or None.
    training.query_codes(NoteVec.embedding, vector)   # Packed bytes.
"""
import os

import numpy as np
from peewee import NodeList
from peewee import Select
from peewee import Table

from playhouse_vec.clustering import assign
from playhouse_vec.clustering import bit_codes
from playhouse_vec.clustering import kmeans
from playhouse_vec.clustering import level_thresholds
from playhouse_vec.clustering import nearest_lists
from playhouse_vec.clustering import residuals
from playhouse_vec.database import atomic
from playhouse_vec.database import reclaim_space
from playhouse_vec.fields import PackedVector
from playhouse_vec.fields import VectorField
from playhouse_vec.schema import library_models

# What train() fits, and its key in playhouse_vec_centers after the field's.
SUFFIX = {'center': '', 'centroids': ':lists', 'thresholds': ':bits'}
# Written anew by every train() and deleted by forget(): another process
# that trained or forgot changes it, and the cached parts are read again.
STAMP = ':stamp'
UNREAD = object()
THRESHOLD_SAMPLE = 1 << 14      # Vectors the bit thresholds are fitted on.
LIST_SAMPLE = 1 << 17           # At most, for the k-means of lists=N.


class Training(object):
    """The trained parts of one VecModel, cached while the stored stamp
    stays the same."""
    def __init__(self, model):
        self.model = model
        self._parts = {}
        self._stamp = UNREAD

    def refresh(self):
        """Forget the cached parts if the stored ones changed since they
        were read (another process trained): one indexed lookup."""
        Centers = self._centers()
        stamp = self.model._meta.database.execute_sql(
            'SELECT vector FROM %s WHERE "index" = ? AND field = ?'
            % Centers._meta.table_name,
            (self.model._meta.table_name, STAMP)).fetchone()
        if stamp != self._stamp:
            self._parts.clear()
            self._stamp = stamp

    def part(self, field, part):
        """A stored float32 array for ``field``: its ``'center'`` (the mean
        vector, unit-normalised first for cosine), its ``'centroids'``
        (``lists=N``) or its ``'thresholds'`` (``quantize='bit'``); None
        before training."""
        key = field.name + SUFFIX[part]
        if key not in self._parts:
            Centers = self._centers()
            row = Centers.get_or_none(
                (Centers.index == self.model._meta.table_name) &
                (Centers.field == key))
            array = None if row is None else \
                np.frombuffer(row.vector, '<f4').copy()
            if array is not None and part != 'center':
                array = array.reshape(-1, field.dimensions)
            self._parts[key] = array
        return self._parts[key]

    def _store(self, field, part, array):
        key = field.name + SUFFIX[part]
        (self._centers()
         .insert(index=self.model._meta.table_name, field=key,
                 vector=np.ascontiguousarray(array, '<f4').tobytes())
         .on_conflict_replace()
         .execute())
        self._parts[key] = array

    def forget(self):
        """Delete the stored parts: the index is untrained again."""
        Centers = self._centers()
        Centers.delete().where(
            Centers.index == self.model._meta.table_name).execute()
        self._parts.clear()
        self._stamp = None

    def _centers(self):
        return library_models(self.model._meta.database).centers

    def residuals(self, field, matrix):
        return residuals(matrix, self.part(field, 'center'), field.metric)

    def codes(self, field, residuals):
        """The packed codes of ``quantize='bit'`` for rows of residuals;
        before training, every level's threshold is the center."""
        thresholds = self.part(field, 'thresholds')
        if thresholds is None:
            thresholds = np.zeros((field.bits, field.dimensions), np.float32)
        return bit_codes(residuals, thresholds)

    def query_codes(self, field, vector):
        """The packed codes of one query vector."""
        self.refresh()
        x = self.residuals(field, _stored(field, vector))
        return self.codes(field, x)[0]

    def derived(self, field, matrix):
        """[(hidden field, values)] for the stored vectors in ``matrix``:
        the bit codes and the inverted list."""
        self.refresh()
        vec, out = self.model._vec, []
        x = self.residuals(field, matrix)
        for hidden in vec.hidden_of(field):
            if hidden is vec.lists.get(field):
                centroids = self.part(field, 'centroids')
                values = [0] * len(x) if centroids is None else \
                    assign(x, centroids, field.metric).tolist()
            else:
                values = [PackedVector(b) for b in self.codes(field, x)]
            out.append((hidden, values))
        return out

    def probed_lists(self, field, vector, probes=None):
        """The inverted lists a search for ``vector`` reads, or None (all:
        before training, or no ``lists``)."""
        self.refresh()
        centroids = self.part(field, 'centroids') if field.lists else None
        if centroids is None:
            return None
        probes = probes or field.probes
        if probes >= len(centroids):
            return None
        # For cosine the lists are ranked by the query itself: q.x is
        # q.center + q.(x - center), whose first term is the same in every
        # list, whereas the query's residual would add -center.centroid, a
        # bias per list that misleads the probes when queries and documents
        # are embedded differently (task types shift the queries' mean).
        # Distances (l2, l1) ignore a shared shift: residuals are right.
        center = None if field.metric == 'cosine' else \
            self.part(field, 'center')
        query = residuals(_stored(field, vector), center, field.metric)[0]
        return nearest_lists(query, centroids, field.metric, probes)

    def needed(self):
        """Whether ``index()`` should train: after the first bulk load."""
        fields = self.model._vec.trained
        self.refresh()
        if not fields or all(self.part(f, 'center') is not None
                             for f in fields):
            return False
        return self.model.select().count() >= max(
            [256] + [16 * (f.lists or 0) for f in fields])

    def train(self, vacuum=True, sample=None):
        """Fit every trained part, then rewrite the table to match (see
        ``VecModel.train``)."""
        model = self.model
        database = model._meta.database
        fields = model._vec.trained
        if not fields:
            return
        total = model.select().count()
        if not total:
            # Nothing to fit: untrained again, so that the next rows are
            # not coded with what old data taught (index() trains anew).
            with atomic(database):
                self.forget()
            return
        with atomic(database):
            for field in fields:
                self._fit(field, total, sample)
            stamp = os.urandom(16)
            (self._centers()
             .insert(index=model._meta.table_name, field=STAMP, vector=stamp)
             .on_conflict_replace()
             .execute())
            self._stamp = (stamp,)
            model._rewrite_table(self.rederive(fields))
        if vacuum:
            reclaim_space(database)     # Free the copy's pages.

    def _fit(self, field, total, sample):
        want = sample or max(
            min(256 * (field.lists or 0), LIST_SAMPLE),
            THRESHOLD_SAMPLE if field.quantize == 'bit' else 0)
        step = max(1, total // want) if want else total + 1
        mean, kept = np.zeros(field.dimensions), []
        for _, matrix in self._stored_batches(field):
            x = residuals(matrix, None, field.metric)
            mean += x.sum(axis=0)
            if want:
                kept.append(x[::step])
        center = (mean / total).astype(np.float32)
        self._store(field, 'center', center)
        x = np.concatenate(kept) - center if want else None
        if field.quantize == 'bit':
            self._store(field, 'thresholds', level_thresholds(x, field.bits))
        if field.lists:
            self._store(field, 'centroids', kmeans(
                x, min(field.lists, len(x)), field.metric))

    def _stored_batches(self, field, size=8192):
        """(keys, float32 matrix) batches of the stored vectors."""
        pk = self.model._meta.primary_key
        keys, vectors = [], []
        query = self.model.select(pk, field).order_by(pk).tuples()
        for key, vector in query.iterator():
            keys.append(key)
            vectors.append(vector)
            if len(keys) == size:
                yield keys, np.asarray(vectors, np.float32)
                keys, vectors = [], []
        if keys:
            yield keys, np.asarray(vectors, np.float32)

    def rederive(self, fields):
        """The hidden columns of every row, computed again in Python and
        kept in temporary tables, as ``_rewrite_table`` derivations."""
        database = self.model._meta.database
        pk = self.model._meta.primary_key
        derived = {}
        for n, field in enumerate(fields):
            hidden = self.model._vec.hidden_of(field)
            table = temporary_table(database, 'playhouse_vec_derived%d' % n,
                                    len(hidden))
            for keys, matrix in self._stored_batches(field):
                values = [v for _, v in self.derived(field, matrix)]
                fill_temporary_table(database, table, [keys] + values)
            for i, column in enumerate(hidden):
                derived[column] = (
                    lambda copied, table=table, i=i, column=column:
                    _lookup(Select([table], [getattr(table, 'c%d' % i)])
                            .where(table.id == copied(pk)), column))
        return derived


def _stored(field, vector):
    """A query vector as a 1-row matrix of what ``field`` stores."""
    return field.stored_matrix([field.pack(vector)])


def _lookup(subquery, field):
    # A vector is wrapped in vec_bit() etc., and Peewee 3 writes a
    # subquery there without parentheses.
    if isinstance(field, VectorField):
        return NodeList([subquery], parens=True)
    return subquery


def temporary_table(database, name, count):
    """An empty TEMP table ``name`` (id, c0, ..., c<count - 1>) for values
    computed in Python."""
    columns = ['c%d' % i for i in range(count)]
    database.execute_sql('DROP TABLE IF EXISTS temp.%s' % name)
    database.execute_sql('CREATE TEMP TABLE %s (id PRIMARY KEY, %s)' % (
        name, ', '.join(columns)))
    return Table(name, ['id'] + columns)


def fill_temporary_table(database, table, columns):
    """Insert rows, given as columns of values, into a temporary_table()."""
    database.cursor().executemany(
        'INSERT INTO temp.%s VALUES (%s)' % (
            table.__name__, ', '.join('?' * len(columns))), zip(*columns))
