"""
Indexer: fills a VecModel from its content model with an embedder.

Which rows need work is decided by content hashes: a row is embedded when
its text (or title) changed, re-written without embedding when only its
metadata changed or the cache already has its vector, and left alone
otherwise. Work is done in batches; each batch is embedded first and then
written in one transaction, so a failure leaves no half-written rows and a
later run resumes where the last one stopped.
"""
import collections
import hashlib
import json
import sys

import numpy as np
from peewee import ImproperlyConfigured

from playhouse_vec.database import atomic
from playhouse_vec.embeddings import is_blank
from playhouse_vec.database import key_chunks
from playhouse_vec.schema import has_integer_key
from playhouse_vec.schema import library_models


class IndexStats(dict):
    """Counts of one index() run: embedded, cached, updated, unchanged,
    skipped (empty text) and removed rows."""
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


IndexPlan = collections.namedtuple(
    'IndexPlan', 'work empty orphans have unchanged')


class ProgressBar(object):
    """A one-line progress bar on stderr."""
    def __init__(self, label, stream=None):
        self.label = label
        self.stream = stream or sys.stderr

    def __call__(self, done, total):
        width = 30
        filled = int(width * done / total) if total else width
        self.stream.write('\r%s [%s%s] %d/%d' % (
            self.label, '#' * filled, '.' * (width - filled), done, total))
        if done >= total:
            self.stream.write('\n')
        self.stream.flush()


def _getter(spec, name):
    """A function of a content row from Meta.embed-style settings."""
    if spec is None or callable(spec):
        return spec
    names = (spec,) if isinstance(spec, str) else tuple(spec)

    def get(row):
        values = [getattr(row, field) for field in names]
        return '\n'.join(str(v) for v in values if v not in (None, ''))
    get.__name__ = '%s(%s)' % (name, ', '.join(names))
    return get


class Indexer(object):
    """The embedding setup of one VecModel, checked at class creation."""
    def __init__(self, model):
        meta = model._meta
        self.model = model
        self.embedder = meta.embedder
        self.content = meta.content
        self.text = _getter(meta.embed, 'embed')
        self.title = _getter(meta.embed_title, 'embed_title')
        name = model.__name__
        for option in ('embed', 'embed_title'):
            spec = getattr(meta, option)
            if self.content is None or spec is None or callable(spec):
                continue
            unknown = [n for n in ((spec,) if isinstance(spec, str) else spec)
                       if n not in self.content._meta.fields]
            if unknown:
                raise ImproperlyConfigured(
                    '%s.Meta.%s names %s, which %s has no field of; name '
                    'fields of %s (%s) or give a function of a row.' % (
                        name, option, ', '.join(map(repr, unknown)),
                        self.content.__name__, self.content.__name__,
                        ', '.join(self.content._meta.fields)))
        if self.content is None:
            raise ImproperlyConfigured(
                '%s.Meta.embedder needs Meta.content: the model whose rows '
                'are embedded.' % name)
        if self.text is None:
            raise ImproperlyConfigured(
                '%s.Meta.embedder needs Meta.embed: a field name, a tuple '
                'of field names, or a function of a %s row that returns '
                'the text to embed.' % (name, self.content.__name__))
        vectors = [f for f in model._vec.vectors
                   if f.element_type.name == 'float32']
        if len(model._vec.vectors) != 1 or not vectors:
            raise ImproperlyConfigured(
                '%s.Meta.embedder fills one float32 VectorField; %s has %d '
                'vector columns.' % (name, name, len(model._vec.vectors)))
        self.field = vectors[0]
        if self.embedder.dimensions != self.field.dimensions:
            raise ImproperlyConfigured(
                '%s.%s has %d dimensions but the embedder makes %d; make '
                'them equal.' % (name, self.field.name, self.field.dimensions,
                                 self.embedder.dimensions))
        key = model._meta.primary_key
        content_key = self.content._meta.primary_key
        if model._vec.columns[key].vtype == 'integer' and \
                not has_integer_key(self.content):
            raise ImproperlyConfigured(
                '%s is keyed by an integer rowid, but %s.%s is %s; declare '
                '%s = TextField(primary_key=True) on %s (vec0 keys are '
                'integers or text).' % (
                    name, self.content.__name__, content_key.name,
                    type(content_key).__name__, content_key.name, name))
        # Keys as the content table stores them (a UUIDField's hex), which
        # is what the triggers and the vec0 table see.
        self.stored_key = content_key.db_value
        self.copied = []  # (vec field, content field) pairs.
        for field, column in model._vec.columns.items():
            if column.role in ('vector', 'rowid', 'primary key') or \
                    field in model._vec.hidden:    # Derived on write.
                continue
            source = self.content._meta.fields.get(field.name)
            if source is None and field.default is None and \
                    column.role != 'auxiliary':
                raise ImproperlyConfigured(
                    '%s.%s has no field of the same name in %s to copy '
                    'from; rename it or give it a default.' % (
                        name, field.name, self.content.__name__))
            if source is not None:
                self.copied.append((field, source))

    def _work(self, row):
        """(key, text, title, cache key, state hash, vec row) of one row."""
        key = self.stored_key(row._pk)
        text = self._text(self.text, row, 'embed')
        title = self._text(self.title, row, 'embed_title') \
            if self.title else None
        if is_blank(text):
            return key, None, None, None, None, None
        cache_key = self.embedder.cache_key(text, title=title)
        # The row's own values: a foreign key's id, not a query for the
        # object it points to.
        values = dict((field.name, row.__data__.get(source.name))
                      for field, source in self.copied)
        state = hashlib.sha256(json.dumps(
            [cache_key, sorted(values.items())], default=str).encode(
                'utf-8')).hexdigest()
        values[self.model._meta.primary_key.name] = key
        return key, text, title, cache_key, state, values

    def _text(self, getter, row, option):
        try:
            text = getter(row)
        except Exception as exc:
            raise ValueError(
                '%s.Meta.%s failed for %s %r: %s: %s. Nothing of its batch '
                'was written.' % (self.model.__name__, option,
                                  self.content.__name__, row._pk,
                                  type(exc).__name__, exc)) from exc
        if text is None or isinstance(text, str):
            return text
        raise TypeError(
            '%s.Meta.%s gave %s for %s %r; it must give a string (or None '
            'for no vector).' % (self.model.__name__, option,
                                 type(text).__name__, self.content.__name__,
                                 row._pk))

    def plan(self, keys=None):
        """What :meth:`run` would do for the content rows with ``keys``
        (all by default): ``work``, the rows to embed or update (missing or
        stale); ``empty``, keys of rows with no text; ``orphans``, keys of
        vectors to delete (content gone or text now empty); ``have``, keys
        that have a vector; ``unchanged``, how many rows are up to date."""
        model, content = self.model, self.content
        State = library_models(model._meta.database).rows
        work, seen, empty, unchanged = [], set(), set(), 0
        states, have = {}, set()
        # All rows, or only these keys (say, one saved row), a few hundred
        # at a time.
        for chunk in [None] if keys is None else key_chunks(keys):
            query = content.select()
            known = (State
                     .select(State.row, State.state)
                     .where(State.index == model._meta.table_name))
            stored = model.select(model._meta.primary_key)
            if chunk is not None:
                query = query.where(content._meta.primary_key.in_(chunk))
                known = known.where(State.row.in_(chunk))
                stored = stored.where(model._meta.primary_key.in_(chunk))
            states.update(known.tuples())
            have.update(k for (k,) in stored.tuples())
            for row in query.iterator():
                item = self._work(row)
                seen.add(item[0])
                if item[1] is None:
                    empty.add(item[0])
                elif states.get(item[0]) == item[4] and item[0] in have:
                    unchanged += 1
                else:
                    work.append(item)
        scope = have | set(states)
        if keys is not None:
            scope &= set(keys)
        orphans = sorted(k for k in scope if k not in seen or k in empty)
        return IndexPlan(work, empty, orphans, have, unchanged)

    def run(self, rows=None, batch_size=256, progress=None):
        model = self.model
        database = model._meta.database
        models = library_models(database)
        Cache, State = models.cache, models.rows
        name = model._meta.table_name
        pk = model._meta.primary_key
        stats = IndexStats(embedded=0, cached=0, updated=0, unchanged=0,
                           skipped=0, removed=0)
        if progress is True:
            progress = ProgressBar('Indexing %s' % name)

        keys = None
        if rows is not None:
            keys = list(dict.fromkeys(
                self.stored_key(getattr(r, '_pk', r)) for r in rows))
        plan = self.plan(keys)
        work, orphans, have = plan.work, plan.orphans, plan.have
        self._check_copied(work)
        stats['unchanged'] = plan.unchanged
        stats['skipped'] = len(plan.empty)
        if orphans:
            with atomic(database):
                for chunk in key_chunks(orphans):
                    model.delete().where(pk.in_(chunk)).execute()
                    (State
                     .delete()
                     .where((State.index == name) & State.row.in_(chunk))
                     .execute())
        stats['removed'] = len([k for k in orphans if k in have])

        total = len(work)
        if progress:
            progress(0, total)
        for start in range(0, total, batch_size):
            batch = work[start:start + batch_size]
            self._write(batch, stats, Cache, State, name, database)
            if progress:
                progress(min(total, start + batch_size), total)
        return stats

    def _check_copied(self, work):
        """Raise ValueError naming the content rows whose copied values
        the vec0 table cannot hold, before anything is embedded or
        written (a NULL metadata value would fail the run half-way)."""
        columns = self.model._vec.columns
        bad = collections.OrderedDict()    # Message: content keys.
        for key, text, title, cache_key, state, values in work:
            for field, source in self.copied:
                try:
                    columns[field].check(values[field.name])
                except ValueError as exc:
                    bad.setdefault(str(exc).rstrip('.'), []).append(key)
        if bad:
            name = self.content.__name__
            described = '; '.join('%s %s%s: %s' % (
                name, ', '.join(repr(k) for k in keys[:10]),
                ' and %d more' % (len(keys) - 10) if len(keys) > 10 else '',
                message) for message, keys in bad.items())
            raise ValueError(
                '%s.index() cannot copy these %s rows: %s. Correct them and '
                'run index() again; nothing was embedded or written.' % (
                    self.model.__name__, name, described))

    def _refused(self, vectors, batch):
        """{cache key: why} for the new ``vectors`` (by cache key) that
        the vector column refuses (an all-zero vector where the metric is
        cosine), naming the content rows."""
        refused = {}
        for cache_key, vector in vectors.items():
            try:
                self.field.pack(vector)
            except ValueError as exc:
                keys = [item[0] for item in batch if item[3] == cache_key]
                refused[cache_key] = '%s %s (%s)' % (
                    self.content.__name__,
                    ', '.join(repr(k) for k in keys), str(exc).rstrip('.'))
        return refused

    def _write(self, batch, stats, Cache, State, name, database):
        cache_keys = list(dict.fromkeys(item[3] for item in batch))
        found = {}
        for chunk in key_chunks(cache_keys):
            query = (Cache
                     .select(Cache.key, Cache.vector)
                     .where(Cache.key.in_(chunk))
                     .tuples())
            found.update((k, np.frombuffer(v, np.float32)) for k, v in query)
        # Cached vectors too: another VecModel's metric may have taken
        # a vector this column refuses (all zeros, for cosine).
        refused = self._refused(found, batch)
        missing = [k for k in cache_keys if k not in found]
        if missing:
            # Embed outside the transaction: a failure here writes nothing.
            first = dict((item[3], item) for item in reversed(batch))
            vectors = self.embedder.embed_documents(
                [first[k][1] for k in missing],
                titles=[first[k][2] for k in missing] if self.title
                else None)
            new = dict(zip(missing, vectors))
            refused_new = self._refused(new, batch)
            with atomic(database):
                # Kept on its own: a failed write loses no paid-for vectors.
                (Cache
                 .insert_many([(k, v.astype(np.float32).tobytes())
                               for k, v in new.items()
                               if k not in refused_new],
                              fields=[Cache.key, Cache.vector])
                 .on_conflict_ignore()
                 .execute())
            refused.update(refused_new)
        else:
            new = {}
        if refused:
            raise ValueError(
                '%s.index(): the embedder gave vectors %s cannot hold for '
                '%s; nothing of this batch was written. Make Meta.embed '
                'return None for rows that should have no vector, or use '
                'another embedder.' % (
                    self.model.__name__, self.model.__name__,
                    '; '.join(refused.values())))
        stats['embedded'] += len(new)
        with atomic(database):
            # A content row deleted while the batch was embedded has lost
            # its vector to the delete trigger already: do not bring it back.
            pk = self.content._meta.primary_key
            alive = set()
            for chunk in key_chunks(item[0] for item in batch):
                alive.update(self.stored_key(k) for (k,) in
                             self.content.select(pk)
                             .where(pk.in_(chunk)).tuples())
            batch = [item for item in batch if item[0] in alive]
            if not batch:
                return
            rows = []
            for key, text, title, cache_key, state, values in batch:
                values = dict(values)
                values[self.field.name] = found.get(cache_key, new.get(
                    cache_key))
                rows.append(values)
            self.model.replace_many(rows).execute()
            (State
             .insert_many([(name, item[0], item[4]) for item in batch],
                          fields=[State.index, State.row, State.state])
             .on_conflict_replace()
             .execute())
        stats['cached'] += sum(1 for item in batch if item[3] in found)
        stats['updated'] += len(batch)
