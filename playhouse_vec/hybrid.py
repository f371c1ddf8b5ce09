"""
hybrid_search: vector and full-text search fused in one SELECT.

Each leg ranks its own candidates in a MATERIALIZED CTE (``ROW_NUMBER()
OVER (...)`` and, for min-max fusion, the score scaled over the leg's
candidates); the fusion is a ``UNION ALL`` of per-leg parts summed with
``GROUP BY``, so it runs on SQLite without FULL OUTER JOIN. Fusion is a
weighted min-max blend by default, or Reciprocal Rank Fusion::

    results = hybrid_search(NoteVec, NoteFTS, text='install peewee',
                            vector=query_vector, k=10)
    for note in results.where(Note.course == 'ml'):   # filters both legs
        print(note.title, note.score, note.vec_rank, note.fts_rank)
"""
import numbers
import operator
from functools import reduce

from peewee import SQL
from peewee import Case
from peewee import JOIN
from peewee import Join
from peewee import ModelSelect
from peewee import Ordering
from peewee import Select
from peewee import Value
from peewee import fn

from playhouse_vec.embeddings import is_blank
from playhouse_vec.query import CompiledSelect
from playhouse_vec.query import RAW_SQL
from playhouse_vec.query import column_refs
from playhouse_vec.query import describe
from playhouse_vec.query import models_in
from playhouse_vec.query import replace_node
from playhouse_vec.query import selects_aggregate
from playhouse_vec.query import sources_of
from playhouse_vec.query import split_and
from playhouse_vec.query import with_root


FUSIONS = ('rrf', 'minmax')
EXTRA_COLUMNS = ('score', 'vec_rank', 'fts_rank', 'distance', 'bm25')
DEFAULT_WEIGHTS = {'vec': 1.0, 'fts': 1.5}


class HybridSelect(CompiledSelect):
    """
    Content-model rows ranked by fused vector and full-text scores.

    Returned by :func:`hybrid_search`. ``.where()`` filters on the content
    model are applied inside both legs, before each leg's top candidates
    are taken; ``.limit()`` / ``.offset()`` page through the fused list.
    Each row has ``score``, ``vec_rank``, ``fts_rank``, ``distance`` and
    ``bm25`` (None where the row came from one leg only).

    ``.join()`` other models and ``.select()`` their columns, the content
    model's, and the fused columns as ``SQL('score')`` etc.; the joins read
    the fused rows by key. A filter on a joined model keeps the content
    rows that have a matching joined row (inside both legs) and picks the
    joined rows. The rows are always in fused-score order.
    """
    def __init__(self, content, vec_model, fts_model, text, vector, k,
                 depth, rrf_k, weights, fusion, operator, field):
        # The content fields, then the fused columns, in compiled() order.
        super(HybridSelect, self).__init__(
            content, list(content._meta.sorted_fields) +
            [SQL(name) for name in EXTRA_COLUMNS])
        self._hybrid = dict(vec_model=vec_model, fts_model=fts_model,
                            text=text, vector=vector, depth=depth,
                            rrf_k=float(rrf_k), weights=weights,
                            fusion=fusion, operator=operator, field=field)
        self._limit = k

    def _joined(self):
        """The models in the FROM clause, joins included; the content
        model must come first (its rows are read from the fused list)."""
        content = self.model
        root = self._from_list[0] if len(self._from_list) == 1 else None
        while isinstance(root, Join):
            root = root.lhs
        if root is not content:
            raise ValueError(
                'hybrid_search reads rows of %s; its FROM clause cannot be '
                'replaced (.from_()). Add other models with .join().'
                % content.__name__)
        return sources_of(self._from_list)

    def _check_joined(self, node, joined, what, fix):
        """Refuse a filter or column that reads a model not in the query."""
        stray = models_in(node) - joined - {RAW_SQL}
        if stray:
            content = self.model.__name__
            raise ValueError(
                'hybrid_search %s must read the content model %s or models '
                'joined to the query; got %s on %s. %s' % (
                    what, content, describe(node, self.model),
                    ', '.join(sorted(m.__name__ for m in stray)),
                    fix % {'content': content, 'fused': ', '.join(
                        "SQL('%s')" % name for name in EXTRA_COLUMNS)}))

    def _filters(self, joined):
        """(filters run inside both legs, filters of the outer query).

        A filter reading joined models (or raw SQL) runs inside the legs as
        ``pk IN (SELECT pk FROM <the query's joins> WHERE filter)``, and in
        the outer query too, where it picks the joined rows.
        """
        content = self.model
        pk = content._meta.primary_key
        legs, outer = [], []
        for term in split_and(self._where):
            if not models_in(term) - {content}:
                legs.append(term)
                continue
            self._check_joined(
                term, joined, 'filters',
                'Filter on %(content)s columns instead (a VecModel metadata '
                'column copies the %(content)s column of the same name), or '
                '.join() the model.')
            keys = ModelSelect(content, [pk])
            keys._from_list = list(self._from_list)
            legs.append(pk.in_(keys.where(term)))
            outer.append(term)
        return legs, outer

    def _selected(self, columns, joined):
        """The selected nodes, with the fused columns (``SQL('score')``...)
        read from ``columns`` (name -> node)."""
        selected = []
        for node in self._returning:
            if isinstance(node, SQL) and node.sql in columns:
                selected.append(columns[node.sql].alias(node.sql))
                continue
            self._check_joined(
                node, joined, 'columns',
                'Select %(content)s columns, the fused columns '
                '(%(fused)s), or .join() the model.')
            for ref in column_refs(node):
                if isinstance(ref, SQL) and ref.sql in columns:
                    node = replace_node(node, ref, columns[ref.sql])
            selected.append(node)
        return selected

    def _check_clauses(self):
        """Refuse clauses that would change the fused list silently."""
        key = '%s.%s' % (self.model.__name__,
                         self.model._meta.primary_key.name)
        for item in self._order_by or ():
            if not (isinstance(item, Ordering) and
                    isinstance(item.node, SQL) and
                    item.node.sql == 'score' and
                    item.direction.upper() == 'DESC'):
                raise ValueError(
                    'hybrid_search results are ordered by fused score, best '
                    'first; other orderings are not supported. Sort the '
                    'rows in Python, e.g. sorted(query, key=...).')
        for method, used in (
                ('group_by', self._group_by),
                ('having', self._having is not None),
                ('distinct', self._simple_distinct or
                 self._distinct is not None),
                ('select(<aggregate>)', selects_aggregate(self._returning))):
            if used:
                raise ValueError(
                    'hybrid_search returns the fused rows themselves; '
                    '.%s() is not supported. Aggregate the rows in Python, '
                    'or filter another query by the keys found, e.g. '
                    '.where(%s.in_(search.select(%s))).' % (
                        method, key, key))

    def _vec_hits(self, filters):
        h = self._hybrid
        vec = h['vec_model']
        hits = vec.knn(h['vector'], k=h['depth'], field=h['field'])
        for term in filters:
            hits = hits.where(term)
        return hits.select(vec._meta.primary_key.alias('doc_id'),
                           vec.distance.alias('distance'))

    def _vec_leg(self, filters):
        return self._ranked('vec_leg', self._vec_hits(filters), 'distance')

    def _fts_leg(self, filters):
        h = self._hybrid
        fts = h['fts_model']
        hits = fts.search(h['text'], k=h['depth'], operator=h['operator'])
        for term in filters:
            hits = hits.where(term)
        hits = hits.select(fts.rowid.alias('doc_id'),
                           fts.bm25(*fts.weight_list()).alias('bm25'))
        return self._ranked('fts_leg', hits, 'bm25')

    def _ranked(self, name, hits, score):
        """A leg's hits (lower ``score`` is better) with their rank and,
        for min-max fusion, the score scaled to [0, 1] (1 = best).

        The ranking runs outside the hits query: vec0 refuses another
        ORDER BY next to its KNN, and bm25() cannot run inside a window.
        """
        hits = hits.alias('hits')
        value, key = getattr(hits.c, score), hits.c.doc_id
        columns = [key, value,
                   fn.ROW_NUMBER().over(order_by=[value, key]).alias('rnk')]
        if self._hybrid['fusion'] == 'minmax':
            low, high = fn.MIN(value).over(), fn.MAX(value).over()
            columns.append(_normalise(high - value, high - low)
                           .alias('norm'))
        return Select([hits], columns).cte(name, materialized=True)

    def _from_fused(self, fused, legs):
        """The query's FROM clause (joins included) with the content rows
        read by key from the fused list, and each leg LEFT JOINed (the
        FROM clause is checked by :meth:`_joined`)."""
        content = self.model
        root = Join(fused, content, JOIN.INNER,
                    on=(content._meta.primary_key == fused.c.doc_id))
        for leg in legs:
            root = Join(root, leg, JOIN.LEFT_OUTER,
                        on=(leg.c.doc_id == fused.c.doc_id))
        return with_root(self._from_list, root)

    def compiled(self):
        """The plain query this hybrid search runs as."""
        self._check_clauses()
        h = self._hybrid
        content = self.model
        joined = self._joined()
        filters, outer = self._filters(joined)
        ctes, legs, parts = [], [], []
        for name, build, present in (
                ('vec', self._vec_leg, h['vector'] is not None),
                ('fts', self._fts_leg, h['text'] is not None)):
            if not present:
                legs.append(None)
                continue
            leg = build(filters)
            ctes.append(leg)
            weight = Value(float(h['weights'][name]))
            if h['fusion'] == 'rrf':
                part = weight / (Value(h['rrf_k']) + leg.c.rnk)
            else:
                part = weight * leg.c.norm
            legs.append(leg)
            parts.append(Select([leg], [leg.c.doc_id, part.alias('part')]))
        vec_leg, fts_leg = legs
        union = parts[0]
        for part in parts[1:]:
            union = union.union_all(part)
        union = union.cte('fused_parts')
        fused = (Select([union], [union.c.doc_id,
                                  fn.SUM(union.c.part).alias('score')])
                 .group_by(union.c.doc_id)
                 .cte('fused'))
        columns = {'score': fused.c.score}
        for leg, rank, value in ((vec_leg, 'vec_rank', 'distance'),
                                 (fts_leg, 'fts_rank', 'bm25')):
            if leg is None:
                columns[rank] = columns[value] = SQL('NULL')
            else:
                columns[rank] = leg.c.rnk
                columns[value] = getattr(leg.c, value)
        query = ModelSelect(content, self._selected(columns, joined))
        query._from_list = self._from_fused(fused, ctes)
        query._where = reduce(operator.and_, outer) if outer else None
        query._windows = self._windows
        query._cte_list = list(self._cte_list or ()) + ctes + [union, fused]
        query._order_by = [fused.c.score.desc(), content._meta.primary_key]
        query._limit, query._offset = self._limit, self._offset
        return query


def _normalise(value, spread):
    """value / spread, or 1.0 where every candidate scored the same."""
    return Case(None, [(spread > 0, value / spread)], Value(1.0))


def hybrid_search(vec_model, fts_model, text=None, vector=None, k=10,
                  depth=None, rrf_k=60, weights=None, fusion='minmax',
                  operator='OR', task=None, field=None):
    """
    Rank content rows by vector similarity and full-text relevance at once.

    :param vec_model: a VecModel with ``Meta.content``.
    :param fts_model: an FTSModel over the same content model.
    :param text: the search text (the full-text leg); None skips the leg.
    :param vector: the query vector (the vector leg). When it is None and
        the VecModel has an embedder, ``text`` is embedded with the query
        ``task`` (default ``RETRIEVAL_QUERY``); ``False`` skips the leg.
    :param k: rows to return.
    :param depth: candidates each leg contributes (default ``max(k, 20)``).
    :param rrf_k: the Reciprocal Rank Fusion constant (default 60).
    :param weights: per-leg weights, floats; default
        ``{'vec': 1.0, 'fts': 1.5}``.
    :param fusion: ``'minmax'`` (default: a weighted sum of each leg's
        scores scaled to [0, 1] over its candidates) or ``'rrf'``
        (Reciprocal Rank Fusion, ``weight / (rrf_k + rank)`` per leg).
        The defaults were tuned on the course FAQ dev questions, where
        min-max fusion beat RRF (see benchmarks/hybrid_quality.py).
    :param field: the VectorField to search (default: the VecModel's only
        vector column).
    :returns: a :class:`HybridSelect` of content-model instances.
    """
    for argument, model, kind in (('vec_model', vec_model, '_vec'),
                                  ('fts_model', fts_model, 'bm25')):
        if not hasattr(model, kind):
            raise ValueError(
                'hybrid_search(vec_model, fts_model, ...): %s must be a %s, '
                'got %r.' % (argument, 'VecModel' if kind == '_vec' else
                             'FTSModel', model))
    content = vec_model._meta.content
    if content is None or fts_model._meta.content is not content:
        raise ValueError(
            'hybrid_search needs a VecModel and an FTSModel with the same '
            'Meta.content; got %s and %s.' % (
                getattr(content, '__name__', None),
                getattr(fts_model._meta.content, '__name__', None)))
    field = vec_model._vec.vector_field(field)
    if text is None and (vector is None or vector is False):
        raise ValueError('hybrid_search needs text, vector, or both.')
    if fusion not in FUSIONS:
        raise ValueError('fusion must be one of %s, got %r.' % (
            ', '.join(FUSIONS), fusion))
    for name, value in (('k', k), ('depth', depth)):
        if value is not None and (not isinstance(value, numbers.Integral)
                                  or isinstance(value, bool) or value < 1):
            raise ValueError('%s must be a positive integer, got %r.' % (
                name, value))
    merged = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in merged:
            raise ValueError("weights keys are 'vec' and 'fts', got %r."
                             % (name,))
        merged[name] = float(value)
    # Embedded once the arguments are known to be good (a paid call).
    if vector is None and text is not None and vec_model._indexer and \
            not is_blank(text):
        vector = vec_model._indexer.embedder.embed_query(text, task)
    elif vector is False:
        vector = None
    if vector is not None:    # Checked now, packed as the column stores it.
        vector = field.pack(vector)
    return HybridSelect(content, vec_model, fts_model, text, vector, k,
                        depth or max(k, 20), rrf_k, merged, fusion, operator,
                        field)
