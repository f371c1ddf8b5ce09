"""
KNNSelect: the k-nearest-neighbour query of a VecModel.

All the SQL shapes the KNN search needs live here. A KNN query is compiled
at execution time into one of two forms:

* **vec0 KNN**: ``embedding MATCH ? AND k = ?`` plus the filters vec0
  evaluates *inside* the search (metadata comparisons, IN on integer/text
  metadata, partition keys, rowid IN, distance ranges). Every other filter
  is turned into a ``rowid IN (subquery)`` pre-filter, so the search never
  returns fewer than k rows because a filter was applied after the top-k.
* **exact scan** (k above vec0's limit of 4096): ``ORDER BY
  vec_distance_*(embedding, ?) LIMIT k``, where SQLite applies every filter.

With ``quantize='bit'`` the vec0 KNN runs on the bit column and the
candidates are ranked again by exact distance. With inverted lists
(``lists=N``) the KNN also has ``<field>_list IN (probed lists)``, for which
vec0 returns k rows per list: the (key, distance) pairs are ranked in a
CTE, then only the best rows are read, by key.

A plain search (the model's own columns, no filter, join or paging) has
the same SQL for every query vector: it is compiled once per column list
and database, then run with the new vector and k.

LIMIT/OFFSET (also from ``.get()``, ``.first()``, ``.paginate()``) are
applied outside a MATERIALIZED CTE, because vec0 rejects a LIMIT next to
``k = ?`` on SQLite >= 3.41.
"""
import json
import numbers
import operator
from functools import reduce

import numpy as np
from peewee import Alias
from peewee import Case
from peewee import Column
from peewee import CompoundSelectQuery
from peewee import Expression
from peewee import Field
from peewee import Function
from peewee import JOIN
from peewee import Join
from peewee import ModelObjectCursorWrapper
from peewee import ModelSelect
from peewee import database_required
from peewee import Negated
from peewee import Node
from peewee import NodeList
from peewee import OP
from peewee import Ordering
from peewee import SQL
from peewee import Select
from peewee import SelectQuery
from peewee import Value
from peewee import WrappedNode
from peewee import fn

from playhouse_vec.database import direct


K_MAX = 4096  # SQLITE_VEC_VEC0_K_MAX in sqlite-vec 0.1.9.
DEFAULT_K = 10
COMPARISONS = (OP.EQ, OP.NE, OP.LT, OP.LTE, OP.GT, OP.GTE)
RANGES = (OP.LT, OP.LTE, OP.GT, OP.GTE)
# Filters vec0 applies inside the KNN, by column role and vec0 type.
NATIVE_OPS = {
    ('metadata', 'integer'): COMPARISONS + (OP.IN,),
    ('metadata', 'float'): COMPARISONS,
    ('metadata', 'boolean'): (OP.EQ, OP.NE),
    # Text ranges are not pushed: vec0 0.1.9 mis-compares values of 12 and
    # more bytes. vec0 treats partition-key IN as "k rows per value".
    ('metadata', 'text'): (OP.EQ, OP.NE, OP.IN),
    ('partition key', 'integer'): COMPARISONS,
    ('partition key', 'text'): COMPARISONS,
}
AGGREGATES = ('AVG', 'COUNT', 'GROUP_CONCAT', 'MAX', 'MIN', 'SUM', 'TOTAL')
RAW_SQL = object()  # Marks SQL the filter analysis cannot see into.
_UNSET = object()


def per_list_k(k, candidates, probes):
    """How many Hamming candidates each probed list gives a search with
    ``quantize='bit'`` and ``lists=`` that ranks ``candidates`` of them for
    k results: a few times k, and together twice the candidates. vec0's
    cost grows with rows x k, so asking every list for all the candidates
    (1M x 384, k=10, 16x, 64 lists: 45 ms) costs three times as much as
    this (17 ms) for the same recall."""
    return min(candidates, max(3 * k, -(-2 * candidates // probes)))


def split_and(node):
    """The top-level AND terms of a WHERE expression, BETWEEN split."""
    if node is None:
        return []
    if isinstance(node, Expression) and node.op == OP.AND:
        return split_and(node.lhs) + split_and(node.rhs)
    if isinstance(node, Expression) and node.op == OP.BETWEEN and \
            isinstance(node.lhs, Field) and isinstance(node.rhs, NodeList):
        low, _, high = node.rhs.nodes
        return [Expression(node.lhs, OP.GTE, low),
                Expression(node.lhs, OP.LTE, high)]
    return [node]


def column_refs(node):
    """Yield the columns (Field, Column) and raw SQL an expression reads."""
    if isinstance(node, (Field, Column, SQL)):
        yield node
    elif isinstance(node, Expression):
        yield from column_refs(node.lhs)
        yield from column_refs(node.rhs)
    elif isinstance(node, Function):
        yield from column_refs(node.arguments)
    elif isinstance(node, NodeList):
        yield from column_refs(node.nodes)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from column_refs(item)
    elif isinstance(node, (WrappedNode, Ordering)):
        yield from column_refs(node.node)
    elif isinstance(node, CompoundSelectQuery):
        yield from column_refs([node.lhs, node.rhs])
    elif isinstance(node, Select):
        # A correlated subquery reads the columns of sources it does not
        # select from itself (EXISTS (... WHERE user.id = note.owner_id)).
        own = sources_of(node._from_list)
        inner = [node._returning, node._where, node._having]
        for ref in column_refs(inner):
            source = getattr(ref, 'source', None) or getattr(ref, 'model',
                                                             None)
            if not isinstance(ref, SQL) and source not in own:
                yield ref
    # Values read no columns.


def models_in(node):
    """The models (or RAW_SQL, for raw SQL) an expression reads from."""
    found = set()
    for ref in column_refs(node):
        if isinstance(ref, Field):
            found.add(getattr(ref, 'source', None) or ref.model)
        elif isinstance(ref, Column):
            found.add(ref.source)
        else:
            found.add(RAW_SQL)
    return found


def is_value(node):
    if isinstance(node, (list, tuple)):
        return all(is_value(item) for item in node)
    if isinstance(node, Value):
        return not isinstance(node.value, Node)
    return not isinstance(node, Node)


def rebuilt(node, change):
    """A copy of an expression tree in which every node for which
    ``change(node)`` is not None is replaced by that result."""
    found = change(node)
    if found is not None:
        return found
    if isinstance(node, (list, tuple, set, frozenset)):
        return type(node)(rebuilt(item, change) for item in node)
    if isinstance(node, Expression):
        return Expression(rebuilt(node.lhs, change), node.op,
                          rebuilt(node.rhs, change), node.flat)
    if isinstance(node, (WrappedNode, Function, NodeList)):
        # Alias, Negated, Ordering..., fn.X(...) and SQL node lists.
        copy = node.clone()
        for attr in ('node', 'arguments', 'nodes'):
            if attr in node.__dict__:
                setattr(copy, attr, rebuilt(getattr(node, attr), change))
        return copy
    return node


def _plain(node):
    if isinstance(node, (np.generic, np.ndarray)):
        return node.tolist()      # (An array of keys for IN, too.)
    if isinstance(node, Value) and isinstance(node.value, (
            np.generic, np.ndarray, list, tuple, set, frozenset)):
        return Value(plain_values(node.value), node.converter, node.multi)


def selects_aggregate(nodes):
    """Whether one of the selected ``nodes`` is an aggregate."""
    # (MIN and MAX of two or more values are scalar functions.)
    return any(isinstance(node.unwrap(), Function) and
               node.unwrap().name.upper() in AGGREGATES and
               (len(node.unwrap().arguments) == 1 or
                node.unwrap().name.upper() not in ('MIN', 'MAX'))
               for node in nodes or ())


def plain_values(node):
    """A copy of an expression with numpy scalars as Python numbers: the
    driver binds an np.float32 as a BLOB (which compares above every
    number) and JSON cannot encode an np.int64."""
    return rebuilt(node, _plain)


def where_terms(query):
    """The AND-ed terms of a query's WHERE clause, with plain values."""
    return [plain_values(term) for term in split_and(query._where)]


def replace_node(node, old, new):
    """A copy of an expression with ``old`` replaced by ``new``."""
    return rebuilt(node, lambda item: new if item is old else None)


def describe(node, model):
    """A filter as SQL with its parameters, for error messages."""
    sql, params = model._meta.database.get_sql_context().sql(node).query()
    return '%s %r' % (sql, tuple(params)) if params else sql


def _raw_value(node):
    return node.value if isinstance(node, Value) else node


class FilterPlan(object):
    """
    Sorts the WHERE terms of a KNN query by where they can run.

    ``native`` terms stay next to MATCH. Every other filter goes into
    :meth:`pk_filter`, one ``pk IN (...)`` pre-filter that intersects the
    primary keys each of them selects; filters that read joined tables stay
    in the outer WHERE clause as well (``outer``), where they pick the
    joined rows.
    """
    def __init__(self, query):
        self.query = query
        self.model = model = query.model
        self.pk = model._meta.primary_key
        self.content = model._meta.content
        self.joined = query.joined_models()
        self.native = []
        self.outer = []
        self.pk_terms = []
        self.own_terms = []        # Filters on the vec0 table itself.
        self.content_terms = []
        self.join_terms = []
        self.terms = where_terms(query)
        for term in self.terms:
            for part in self._rewrite(term):
                self._sort(part)

    def _rewrite(self, term):
        """Equivalent terms vec0 can run inside the KNN, where there are."""
        column = self._column(term)
        if column is not None and column.vtype == 'boolean':
            term = Expression(term, OP.EQ, True)  # A bare boolean column.
        if isinstance(term, Negated) and isinstance(term.node, Expression) \
                and term.node.op in (OP.EQ, OP.NE) and \
                self._column(term.node.lhs) is not None:
            inner = term.node
            term = Expression(inner.lhs, OP.NE if inner.op == OP.EQ
                              else OP.EQ, inner.rhs)
        column = self._column(getattr(term, 'lhs', None))
        if column is not None and term.op == OP.NOT_IN and \
                column.role == 'metadata' and \
                column.vtype in ('integer', 'text') and \
                isinstance(term.rhs, (list, tuple)) and \
                0 < len(term.rhs) <= 64 and is_value(term.rhs):
            return [Expression(term.lhs, OP.NE, value) for value in term.rhs]
        return [term]

    def _sort(self, term):
        model = self.model
        models = models_in(term)
        fields = [ref for ref in column_refs(term) if isinstance(ref, Field)]
        if any(f is model.k for f in fields):
            raise ValueError('k is set by knn(vector, k=...), not by a '
                             'filter.')
        if any(f is model.distance for f in fields):
            self._sort_distance(term, models)
        elif models <= {model}:
            if self._is_native(term):
                self.native.append(term)
            elif self._is_pk_lookup(term):
                self.pk_terms.append(term)
            else:
                self.own_terms.append(term)
        elif self.content is not None and models == {self.content}:
            self.content_terms.append(term)
            if self.content in self.joined:
                self.outer.append(term)
        else:
            self.join_terms.append(term)
            if models <= self.joined:
                self.outer.append(term)     # Else the pre-filter joins.

    def _sort_distance(self, term, models):
        if not (isinstance(term, Expression) and term.op in RANGES and
                term.lhs is self.model.distance and is_value(term.rhs)):
            raise ValueError(
                'Filters on distance must compare it with a number using '
                '<, <=, > or >= (e.g. %s.distance < 0.5); got %s.' % (
                    self.model.__name__, describe(term, self.model)))
        self.native.append(term)

    def _column(self, node):
        if isinstance(node, Field) and node.model is self.model:
            return self.model._vec.columns.get(node)

    def _is_native(self, term):
        if isinstance(term, Expression) and term.op == OP.OR:
            # (c = x OR c = y) on one metadata column runs inside the KNN
            # where vec0 takes c IN (x, y), which SQLite makes of it.
            leaves = _split_or(term)
            columns = set(id(self._column(leaf.lhs)) for leaf in leaves
                          if isinstance(leaf, Expression))
            column = self._column(getattr(leaves[0], 'lhs', None))
            return len(columns) == 1 and column is not None and \
                OP.IN in NATIVE_OPS.get((column.role, column.vtype), ()) \
                and all(isinstance(leaf, Expression) and
                        leaf.op == OP.EQ and self._is_native(leaf)
                        for leaf in leaves)
        if not isinstance(term, Expression):
            return False
        column = self._column(term.lhs)
        if column is None:
            return False
        ops = NATIVE_OPS.get((column.role, column.vtype), ())
        if term.op not in ops:
            return False
        if term.op == OP.IN:
            return is_value(term.rhs) or isinstance(term.rhs, SelectQuery)
        return is_value(term.rhs) and _raw_value(term.rhs) is not None

    def _is_pk_lookup(self, term):
        column = self._column(getattr(term, 'lhs', None))
        return (column is not None and column.vtype == 'integer' and
                column.role in ('rowid', 'primary key') and
                term.op in (OP.EQ, OP.IN) and
                (is_value(term.rhs) or isinstance(term.rhs, SelectQuery)))

    def content_filter(self):
        if self.content_terms:
            return self.content.select(self.content._meta.primary_key).where(
                reduce(operator.and_, self.content_terms))

    def exact_filters(self, distance):
        """The WHERE terms of an exact scan, where SQLite runs them all."""
        unjoined = [] if self.content in self.joined else self.content_terms
        where = [replace_node(term, self.model.distance, distance)
                 for term in self.terms
                 if not any(term is other for other in unjoined)]
        if unjoined:
            where.append(self.pk.in_(self.content_filter()))
        return where

    def pk_filter(self):
        """One ``pk IN (...)`` term that applies every pre-filter, or None."""
        model, pk = self.model, self.pk
        if len(self.pk_terms) == 1 and not (
                self.own_terms or self.content_terms or self.join_terms):
            term = self.pk_terms[0]
            if isinstance(term.rhs, SelectQuery):
                return term
            values = term.rhs if term.op == OP.IN else [term.rhs]
            values = [_raw_value(v) for v in values]
            # A one-value IN list becomes "pk = ?", which vec0 applies after
            # the top-k; a json_each() subquery is always a pre-filter.
            return pk.in_(Select(
                [fn.json_each(json.dumps(values))], [SQL('value')]))
        selects = []
        if self.content_terms:
            selects.append(self.content_filter())
        own = self.own_terms + self.pk_terms + self.join_terms
        if own:
            query = ModelSelect(model, [pk])
            if self.join_terms:
                query._from_list = list(self.query._from_list)
                content = self.content
                if content is not None and content not in self.joined and \
                        any(content in models_in(t) for t in self.join_terms):
                    # Terms mixing content and vec0 columns, not joined
                    # by the query: LEFT, so an OR keeps vectors without
                    # a content row.
                    query._from_list[0] = Join(
                        query._from_list[0], content, JOIN.LEFT_OUTER,
                        on=(pk == content._meta.primary_key))
            query._where = reduce(operator.and_, own)
            selects.append(query)
        if not selects:
            return None
        return pk.in_(reduce(operator.and_, selects))


def _split_or(node):
    if isinstance(node, Expression) and node.op == OP.OR:
        return _split_or(node.lhs) + _split_or(node.rhs)
    return [node]


class CompiledSelect(ModelSelect):
    """A ModelSelect that compiles to another query, ``compiled()`` (with
    CTEs), read on the calling thread's connection even on a
    ``SqliteQueueDatabase`` (which would queue ``WITH ...`` as a write)."""
    def compiled(self):
        raise NotImplementedError

    def __sql__(self, ctx):
        compiled = self.compiled()
        if self._alias:
            compiled = compiled.alias(self._alias)
        return ctx.sql(compiled)

    def _execute(self, database):
        with direct(database):
            return super(CompiledSelect, self)._execute(database)


class KNNSelect(CompiledSelect):
    """
    A ``ModelSelect`` of the k rows nearest to a query vector.

    Returned by :meth:`VecModel.knn`; chain ``where``, ``join``,
    ``limit``/``offset``, ``get``, ``first``, ``count`` as usual. The rows
    are ordered by distance; ``limit``/``offset`` page through the k.
    """
    @staticmethod
    def check_k(k):
        if k is not None and (not isinstance(k, numbers.Integral) or
                              isinstance(k, bool) or k < 0):
            raise ValueError('k must be a non-negative integer, got %r.'
                             % (k,))

    def __init__(self, model, field, vector, k=None, probes=None):
        # The default columns (select() with no arguments keeps them).
        super(KNNSelect, self).__init__(model, (), is_default=True)
        self._returning = list(model._vec.selected)   # Plain fields.
        self.check_k(k)
        if isinstance(vector, Node) and (
                field in model._vec.companions or field in model._vec.lists):
            raise ValueError(
                'The query vector of %s.%s must be a value, not SQL: its bit '
                'codes and nearest lists (quantize="bit", lists=) are worked '
                'out in Python. Read the vector first, e.g. '
                '%s.get_by_id(key).%s.' % (model.__name__, field.name,
                                           model.__name__, field.name))
        self._knn_field = field
        self._knn_vector = field.sql_value(vector)
        self._knn_k = None if k is None else int(k)   # Not numpy's.
        self._knn_raw = vector
        if probes is not None and field not in model._vec.lists:
            raise ValueError('probes= applies to vector columns with '
                             'inverted lists, e.g. VectorField(768, '
                             'lists=256); %s.%s has none.' % (
                                 model.__name__, field.name))
        if probes is not None:
            probes = field._check_probes(probes)
        self._knn_probes = probes
        self._knn_list_field = model._vec.lists.get(field)
        self._knn_lists = _UNSET     # The lists the search reads (JSON).
        self._knn_codes = None       # quantize='bit': the query's bits.
        self._knn_all_lists = False
        self._knn_per_list = None    # k per probed list (ranked candidates).
        # An SQL condition: when set, vec0 is asked for k rows where it
        # holds and for none otherwise (statements that decide as they run).
        self._knn_only_if = None

    def _probe(self):
        """``list IN (...)`` for a field with trained inverted lists: the
        lists nearest to the query (vec0 returns k rows from each); or
        None to search every row."""
        if self._knn_lists is _UNSET:
            self._knn_lists = None
            if self._knn_list_field is not None and self.k <= K_MAX:
                # One parameter, a JSON array, whatever the number of
                # probes: the statement's text stays the same.
                lists = self.model.probed_lists(
                    self._knn_field, self._knn_raw, self._knn_probes)
                if lists is not None:      # None: every list, a plain KNN.
                    self._knn_lists = json.dumps(lists)
        if self._knn_lists is None or self._knn_all_lists:
            return None
        lists = Value(self._knn_lists, converter=False, unpack=False)
        return self._knn_list_field.in_(
            Select([fn.json_each(lists)], [SQL('value')]))

    def _wanted_rows(self):
        """How many rows the query returns when k rows match."""
        offset = self._offset or 0
        wanted = max(0, self.k - offset)
        return wanted if self._limit is None else min(self._limit, wanted)

    # Query parts that, when all empty, make a plain KNN search.
    _PLAIN_EMPTY = ('_where', '_order_by', '_limit', '_offset', '_group_by',
                    '_having', '_windows', '_distinct', '_simple_distinct',
                    '_for_update', '_lateral', '_cte_list', '_alias')

    def _plain_key(self, database):
        """A cache key when this is a plain search (columns of the model, no
        filter, join or paging), whose SQL is the same for every query
        vector; else None."""
        model, field = self.model, self._knn_field
        if self._from_list != [model] or self.k > K_MAX or \
                any(map(self.__dict__.get, self._PLAIN_EMPTY)) or \
                self._limit is not None or self._offset is not None:
            return None     # (LIMIT 0 is a limit too.)
        # Only the model's own fields: they live as long as the model, so
        # their ids are stable keys.
        ids = []
        for node in self._returning:
            if not (isinstance(node, Field) and node.model is model):
                return None
            ids.append(id(node))
        return (database, model._meta.schema, model._meta.table_name,
                field.name, self._row_type, tuple(ids), self.k,
                self._probe() is not None, self._coarse_per_list())

    def _slots(self):
        """The parameters that change from one plain search to the next:
        the vector, its bit codes (``quantize='bit'``) and the probed lists
        (inverted lists); None when the vector is an SQL expression."""
        vector = self._knn_vector
        if isinstance(vector, Function) and len(vector.arguments) == 1:
            vector = vector.arguments[0]     # vec_int8(?), vec_bit(?)
        if not (isinstance(vector, Value) and
                isinstance(vector.value, bytes)):
            return None
        slots = [vector.value]
        if self._knn_field.quantize == 'bit':
            slots.append(self._coarse_codes())
        if self._probe() is not None:
            slots.append(self._knn_lists)
        return slots

    def _execute_plain(self, database):
        """Run a plain search from SQL compiled once per column list and k;
        only the slots' parameters change."""
        key = self._plain_key(database)
        slots = None if key is None else self._slots()
        if slots is None:
            return None
        cache = self.model._vec.plain_sql
        plain = cached = cache.get(key)
        if plain is None:
            sql, params = database.get_sql_context().sql(self).query()
            plain = PlainSearch.compiled(sql, params, slots)
            if plain is None:
                return None
        params = plain.bind(slots)
        cursor = database.execute_sql(plain.sql, params)
        if cached is None:          # Kept once it has run.
            if len(cache) >= 64:    # Bounded: databases come and go.
                cache.clear()
            cache[key] = plain
        if self._row_type is None:
            self._cursor_wrapper = KNNRowWrapper(cursor, self.model,
                                                 self._returning, plain)
        else:
            self._cursor_wrapper = self._get_cursor_wrapper(cursor)
        return self._cursor_wrapper

    def _execute(self, database):
        if self._cursor_wrapper is None:
            with direct(database):
                wrapper = self._execute_plain(database)
            if wrapper is not None:
                return wrapper
        return super(KNNSelect, self)._execute(database)

    @database_required
    def exists(self, database):
        # Peewee's exists() puts a LIMIT next to the KNN's k, which vec0
        # rejects: page to the first row instead.
        return len(self.limit(1).offset(None).execute(database)) > 0

    def joined_models(self):
        """The models in the FROM clause, joins included."""
        return sources_of(self._from_list)

    @property
    def k(self):
        """The number of neighbours the search asks vec0 for."""
        if self._knn_k is not None:
            return self._knn_k
        if self._limit is not None:
            return self._limit + (self._offset or 0)
        return DEFAULT_K

    def _check_order(self):
        distance = self.model.distance
        for item in self._order_by or ():
            node = item.node if isinstance(item, Ordering) else item
            direction = getattr(item, 'direction', 'ASC')
            if node is not distance or direction.upper() != 'ASC':
                raise ValueError(
                    'KNN results are ordered by distance, nearest first; '
                    'other orderings are not supported. Sort the rows in '
                    'Python, e.g. sorted(query, key=...).')

    def _is_distance(self, node):
        """Whether a selected node is the distance column, aliased or not
        (``.select(Doc.distance.alias('d'))``)."""
        if isinstance(node, Alias):
            node = node.node
        return node is self.model.distance

    def _returning_with(self, distance):
        """The selected nodes with the distance computed as ``distance``
        (under the name it was selected as), in expressions too."""
        return [distance.alias(_column_name(node, 0))
                if self._is_distance(node) else
                replace_node(node, self.model.distance, distance)
                for node in self._returning]

    def _base_query(self, returning, where, order_by, limit=None):
        query = ModelSelect(self.model, returning)
        for attr in ('_from_list', '_group_by', '_having', '_windows',
                     '_distinct', '_cte_list'):
            setattr(query, attr, getattr(self, attr))
        query._where = reduce(operator.and_, where) if where else None
        query._order_by = order_by
        query._limit = limit
        return query

    def _knn_query(self, returning=None):
        model, field = self.model, self._knn_field
        plan = FilterPlan(self)
        k = self.k
        if self._probe() is not None and self._knn_per_list:
            k = self._knn_per_list
        if self._knn_only_if is not None:
            k = Case(None, [(self._knn_only_if, k)], 0)
        where = [Expression(field, 'MATCH', self._knn_vector),
                 Expression(model.k, OP.EQ, k)]
        where.extend(plan.native)
        if self._probe() is not None:
            where.append(self._probe())
        pk_filter = plan.pk_filter()
        if pk_filter is not None:
            where.append(pk_filter)
        where.extend(plan.outer)
        return self._base_query(returning or self._returning, where,
                                [model.distance])

    def _ranked_keys(self, count, offset=None, needed=None):
        """(CTEs, top): the ``count`` nearest (knn_key, knn_distance) rows
        of this search over its probed lists, ranked.

        The probed lists may hold fewer than ``needed`` (default k) rows
        that pass the filters (a rare value, a small list); then every list
        is searched instead, decided inside the statement: the search of
        every list asks vec0 for k = 0 rows (no work) when the probed lists
        were enough.
        """
        inner = self._knn_query(self._key_columns())
        ctes, inner._cte_list = list(inner._cte_list or ()), None
        probed = inner.cte('knn_probed', materialized=True)
        found = Select([probed], [fn.COUNT(SQL('*'))])
        enough = found >= (self.k if needed is None else needed)
        every = self.clone()
        every._knn_all_lists = True
        every._knn_only_if = ~enough
        every = every._knn_query(self._key_columns())
        every._cte_list = None
        every = every.alias('knn_every')
        candidates = (
            Select([probed], [probed.c.knn_key, probed.c.knn_distance])
            .where(enough)
            .union_all(Select([every], [every.c.knn_key,
                                        every.c.knn_distance])))
        candidates = candidates.cte('knn_candidates')
        top = (Select([candidates], [candidates.c.knn_key,
                                     candidates.c.knn_distance])
               .order_by(candidates.c.knn_distance)
               .limit(count)
               .offset(offset)
               .cte('knn_top'))
        return ctes + [probed, candidates, top], top

    def _key_columns(self):
        model = self.model
        return [model._meta.primary_key.alias('knn_key'),
                model.distance.alias('knn_distance')]

    def _from_keys(self, top):
        """The query's FROM clause, reading the ranked keys first and the
        rows by key (CROSS JOIN: SQLite keeps that order)."""
        model = self.model
        return with_root(self._from_list, Join(
            top, model, JOIN.CROSS, model._meta.primary_key == top.c.knn_key))

    def _keyed_query(self, top, ctes, returning, where, order_by, limit=None):
        """A query over the rows of the ranked keys in ``top``."""
        where = FilterPlan(self).outer + where   # Pick the joined rows.
        query = self._base_query(returning, where, order_by, limit)
        query._from_list = self._from_keys(top)
        query._cte_list = list(self._cte_list or ()) + ctes
        return query

    def _probed_query(self):
        # Probed lists give k rows each, unsorted. The keys and distances
        # are ranked first, then the k best rows read: the other columns
        # (vectors especially) are not read for every candidate.
        ctes, top = self._ranked_keys(self._wanted_rows(), self._offset)
        distance = top.c.knn_distance
        return self._keyed_query(top, ctes, self._returning_with(distance),
                                 [], [distance])

    def _bits_with_distance_filter(self):
        """quantize='bit' and a filter on the distance: the Hamming search
        cannot apply it (rows the exact distance keeps would be lost among
        the candidates), so an exact scan runs instead."""
        return self._knn_field in self.model._vec.companions and any(
            ref is self.model.distance
            for term in split_and(self._where)
            for ref in column_refs(term))

    def _rescored_query(self):
        # quantize='bit': a Hamming KNN on the binary companion column, with
        # the same filters, picks oversample x k candidates and returns their
        # selected columns and float vectors (vec0 reads them cheaply inside
        # the KNN); the outer query ranks those by the exact distance.
        # (Filters on the distance take the exact path instead.)
        model, field = self.model, self._knn_field
        terms = where_terms(self)
        coarse = KNNSelect(model, model._vec.companions[field],
                           self._coarse_codes(), self._coarse_k())
        coarse._from_list = self._from_list
        coarse._where = reduce(operator.and_, terms) if terms else None
        exact = Function('vec_distance_' + field.metric, [
            field.storage.typed(field), self._knn_vector])
        if self._probe() is not None:
            # Oversampled candidates from each probed list.
            coarse._knn_list_field = self._knn_list_field
            coarse._knn_lists = self._knn_lists
            coarse._knn_per_list = self._coarse_per_list()
            # Rank them by Hamming distance, then read the rows (and float
            # vectors) of the best only.
            ctes, top = coarse._ranked_keys(coarse.k, needed=self.k)
            return self._keyed_query(top, ctes, self._returning_with(exact),
                                     [], [exact], self.k)
        # Columns come from the candidates; expressions of the distance are
        # computed outside, on the exact distance and the columns they use.
        nodes = list(self._returning)
        outside = [node for node in nodes if not self._is_distance(node) and
                   any(ref is model.distance for ref in column_refs(node))]
        used = []
        for node in outside:
            used.extend(ref for ref in column_refs(node)
                        if isinstance(ref, Field) and
                        ref is not model.distance and
                        not any(ref is u for u in used))
        columns = [node.alias('c%d' % i) for i, node in enumerate(nodes)
                   if not self._is_distance(node) and
                   not any(node is o for o in outside)]
        columns += [ref.alias('u%d' % i) for i, ref in enumerate(used)]
        cte = (coarse
               .select(*(columns + [field.alias('rescore_vector')]))
               .cte('coarse', materialized=True))
        distance = Function('vec_distance_' + field.metric, [
            field.storage.typed(cte.c.rescore_vector), self._knn_vector])

        def computed(node):
            node = replace_node(node, model.distance, distance)
            for i, ref in enumerate(used):
                node = replace_node(node, ref, getattr(cte.c, 'u%d' % i))
            return node
        out = [distance.alias(_column_name(node, i))
               if self._is_distance(node) else
               computed(node) if any(node is o for o in outside) else
               getattr(cte.c, 'c%d' % i).alias(_column_name(node, i))
               for i, node in enumerate(nodes)]
        return (Select([cte], out)
                .with_cte(cte)
                .order_by(distance)
                .limit(self.k))

    def _grouped_query(self):
        # GROUP BY a vec0 column makes SQLite ask vec0 for rows in that
        # order, which it refuses: rank the k keys first (any search path),
        # then group the rows read by key. ORDER BY, LIMIT and OFFSET apply
        # to the groups.
        model = self.model
        keys = self.clone()
        keys._knn_k = self._knn_k or DEFAULT_K
        keys._group_by = keys._having = keys._order_by = None
        keys._limit = keys._offset = keys._distinct = None
        keys._returning = self._key_columns()
        inner = keys.compiled()
        ctes, inner._cte_list = list(inner._cte_list or ()), None
        top = inner.cte('knn_grouped', materialized=True)
        distance = top.c.knn_distance

        def exact(node):
            return replace_node(node, model.distance, distance)
        query = self._keyed_query(
            top, ctes + [top],
            [exact(node) for node in self._returning_with(distance)], [],
            [exact(node) for node in self._order_by or ()], self._limit)
        query._offset = self._offset
        query._group_by = [exact(node) for node in self._group_by or ()]
        if self._having is not None:
            query._having = exact(self._having)
        return query

    def _coarse_per_list(self):
        """quantize='bit' with probed lists: the candidates each list
        gives (None otherwise)."""
        if self._knn_field not in self.model._vec.companions or \
                self._probe() is None:
            return None
        return per_list_k(self.k, self._coarse_k(),
                          len(json.loads(self._knn_lists)))

    def _coarse_k(self):
        """quantize='bit': the candidates ranked exactly."""
        return min(K_MAX, self.k * self._knn_field.oversample)

    def _coarse_codes(self):
        """quantize='bit': the query's packed bit codes, made once (a plain
        search finds them among the parameters by identity)."""
        if self._knn_codes is None:
            self._knn_codes = self.model._training.query_codes(
                self._knn_field, self._knn_raw)
        return self._knn_codes

    def _exact_query(self):
        # Above vec0's k limit: an exact scan, where SQLite itself applies
        # every filter, so nothing needs rewriting.
        field = self._knn_field
        distance = Function(
            'vec_distance_' + field.metric,
            [field.storage.typed(field), self._knn_vector])
        where = FilterPlan(self).exact_filters(distance)
        return self._base_query(self._returning_with(distance), where,
                                [distance], limit=self.k)

    def compiled(self):
        """The plain query this KNN search runs as."""
        if self._group_by or self._having or \
                selects_aggregate(self._returning):
            # (SQLite would read the rows of MIN() or MAX() alone in that
            # column's order, which vec0 refuses.)
            return self._grouped_query()
        self._check_order()
        model = self.model
        if self.k > K_MAX or self._bits_with_distance_filter():
            inner = self._exact_query()
        elif self._knn_field in model._vec.companions:
            inner = self._rescored_query()
        elif self._probe() is not None:
            return self._probed_query()     # Paged inside.
        else:
            inner = self._knn_query()
        if self._limit is None and not self._offset:
            return inner
        # Hoist the inner query's own CTEs: a CTE body cannot hold a WITH.
        ctes, inner._cte_list = list(inner._cte_list or ()), None
        knn = inner.cte('knn', materialized=True)
        outer = (Select([knn], [SQL('*')])
                 .with_cte(*(ctes + [knn]))
                 .limit(self._limit)
                 .offset(self._offset))
        for position, node in enumerate(self._returning, 1):
            if self._is_distance(node):
                outer = outer.order_by(SQL(str(position)))
        return outer


class PlainSearch(object):
    """The SQL of a plain search, its parameters, and how its result
    columns map to the model (resolved by the first search that returns
    rows). Every parameter but the slots is the same for each search with
    the same cache key."""
    __slots__ = ('sql', 'params', 'positions', 'columns')

    def __init__(self, sql, params, positions):
        self.sql = sql
        self.params = params
        self.positions = positions     # (parameter index, slot index)
        self.columns = None

    @classmethod
    def compiled(cls, sql, params, slots):
        """Find the slots among the compiled parameters (by identity: each
        is a fresh object); None if one is missing."""
        positions = [(i, j) for i, param in enumerate(params)
                     for j, slot in enumerate(slots) if param is slot]
        if set(j for _, j in positions) != set(range(len(slots))):
            return None
        return cls(sql, list(params), positions)

    def bind(self, slots):
        params = list(self.params)
        for i, j in self.positions:
            params[i] = slots[j]
        return params


class KNNRowWrapper(ModelObjectCursorWrapper):
    """The model instances of a plain search, read at once. Its columns are
    all fields of the model: the values go straight into each instance's
    data, converted only where vec0 does not return them as they should be.
    """
    def __init__(self, cursor, model, columns, plain):
        # Peewee's cursor wrapper state, set in one step: its chain of
        # __init__ methods costs more than the rows of a small k.
        self.cursor, self.model, self.select = cursor, model, columns
        self.constructor, self.is_model = model, True
        self.index = 0
        rows = cursor.fetchall()
        cursor.close()                  # Release the statement.
        if rows and plain.columns is None:
            # Peewee resolves the columns once; every later search with
            # this SQL reuses its names and converters.
            self.initialize()
            names = getattr(self, 'unique_columns', self.columns)
            native = model._vec.native
            plain.columns = tuple(names), tuple(
                (i, names[i], convert)
                for i, convert in enumerate(self.converters)
                if convert is not None and not native(self.fields[i]))
        self.row_cache = [self.process_row(row, plain.columns)
                          for row in rows]
        self.count = len(rows)
        self.initialized = self.populated = True

    def process_row(self, row, columns):
        names, converted = columns
        obj = self.constructor(__no_default__=1)
        obj.__data__ = data = dict(zip(names, row))
        for i, name, convert in converted:
            data[name] = convert(row[i])
        return obj

    def iterator(self):
        # The rows are read already (the cursor is closed).
        return iter(self.row_cache)


def _column_name(node, index):
    """The name a selected node comes back under."""
    if isinstance(node, Field):
        return node.name
    return getattr(node, '_alias', None) or 'c%d' % index


def sources_of(from_list):
    """The models and tables of a FROM list, joins included."""
    found = set()

    def collect(node):
        if isinstance(node, Join):
            collect(node.lhs)
            collect(node.rhs)
        else:
            found.add(node)
    for item in from_list or ():
        collect(item)
    return found


def with_root(from_list, root):
    """A FROM list whose first source (the queried model, leftmost in its
    joins) is replaced by ``root``, the joins kept."""
    def swap(node):
        if isinstance(node, Join):
            return Join(swap(node.lhs), node.rhs, node.join_type, node._on)
        return root
    return [swap(from_list[0])] + list(from_list[1:])
