"""
Keeping derived indexes (FTS5, vec0) in step with their content model.

The content model is the one source of truth. Derived tables follow it
through SQLite triggers on the content table, so every write is seen: the
Model API, bulk ``insert_many`` / ``update`` / ``delete`` queries and raw
SQL alike. ``IndexReport`` says where an index and its content disagree.

The trigger SQL of this library lives in this module only.
"""
from peewee import Entity
from peewee import NodeList
from peewee import SQL
from peewee import Table

from playhouse_vec.database import register_database


class IndexReport(object):
    """
    How a derived index differs from its content model::

        report = NoteFTS.check_index()
        if not report.ok:
            print(report)           # missing / extra rowids, stale text
            NoteFTS.rebuild()
    """
    def __init__(self, index, missing, extra, stale=False):
        self.index = index
        self.missing = missing      # Content keys the index lacks.
        self.extra = extra          # Index keys with no content row.
        # Indexed values differ from content (None: could not be checked).
        self.stale = stale

    @property
    def ok(self):
        return not (self.missing or self.extra or self.stale)

    def __repr__(self):
        if self.ok:
            return '<IndexReport %s: ok>' % self.index
        return '<IndexReport %s: %d missing, %d extra%s>' % (
            self.index, len(self.missing), len(self.extra),
            {True: ', stale', None: ', stale unknown'}.get(self.stale, ''))


def compare_keys(index, content_keys, index_keys, stale=False,
                 stored=lambda key: key):
    """An IndexReport from two SELECTs of keys (content and index), the
    content's compared as ``stored`` makes them (as the table holds them).
    """
    content_set = set(stored(row[0]) for row in content_keys.tuples())
    index_set = set(row[0] for row in index_keys.tuples())
    return IndexReport(index, sorted(content_set - index_set),
                       sorted(index_set - content_set), stale)


def shadow_table(model, suffix, columns):
    """A peewee Table for one of a virtual table's shadow tables."""
    return Table(model._meta.table_name + suffix, columns).bind(
        model._meta.database)


def _render(database, nodes):
    ctx = database.get_sql_context()
    return ctx.sql(NodeList(nodes)).query()[0]


def _row(prefix, columns):
    """``NEW."a", NEW."b"``: the content row in a trigger body."""
    return NodeList([NodeList((SQL(prefix + '.'), Entity(c)), glue='')
                     for c in columns], glue=', ')


def _create_trigger(database, name, event, content, statements, when=None):
    body = [NodeList((statement, SQL(';'))) for statement in statements]
    sql = _render(database, [
        SQL('CREATE TRIGGER IF NOT EXISTS'), Entity(name), event,
        SQL('ON'), Entity(content._meta.table_name), when or SQL(''),
        SQL('BEGIN'),
        NodeList(body), SQL('END')])
    database.execute_sql(sql)


def fts_trigger_names(fts_model):
    name = fts_model._meta.table_name
    return [name + '_ai', name + '_ad', name + '_au']


def install_fts_triggers(fts_model, columns):
    """Make an external-content FTS5 table follow its content table.

    ``columns`` are the indexed content columns, in FTS column order.
    REPLACE on the content table deletes rows without firing DELETE
    triggers unless ``recursive_triggers`` is on, so it is turned on for
    the database's connections.
    """
    database = fts_model._meta.database
    content = fts_model._meta.content
    pk = content._meta.primary_key.column_name
    fts = Entity(fts_model._meta.table_name)
    names = NodeList([Entity(c) for c in columns], glue=', ')

    def add(prefix):
        return NodeList((SQL('INSERT INTO'), fts, NodeList(
            (SQL('rowid'), names), glue=', ', parens=True), SQL('VALUES'),
            NodeList((_row(prefix, [pk]), _row(prefix, columns)), glue=', ',
                     parens=True)))

    def remove(prefix):
        return NodeList((SQL('INSERT INTO'), fts, NodeList(
            (fts, SQL('rowid'), names), glue=', ', parens=True),
            SQL("VALUES ('delete',"), _row(prefix, [pk]), SQL(','),
            _row(prefix, columns), SQL(')')))

    ai, ad, au = fts_trigger_names(fts_model)
    watched = NodeList([Entity(c) for c in [pk] + list(columns)], glue=', ')
    _create_trigger(database, ai, SQL('AFTER INSERT'), content, [add('NEW')])
    _create_trigger(database, ad, SQL('AFTER DELETE'), content,
                    [remove('OLD')])
    _create_trigger(database, au, NodeList((SQL('AFTER UPDATE OF'), watched)),
                    content, [remove('OLD'), add('NEW')])
    register_database(database, recursive_triggers=True)


def vec_trigger_names(vec_model):
    name = vec_model._meta.table_name
    return [name + '_ad', name + '_au']


def _literal(text):
    return SQL("'%s'" % text.replace("'", "''"))


def install_vec_triggers(vec_model):
    """Make a vec0 table follow its content table's keys.

    Deleting a content row deletes its vector. Changing a content row's
    primary key moves its vector (and its ``index()`` state) to the new
    key: vec0 ignores an UPDATE of rowid, and its INSERT ... SELECT loses
    the int8/bit type tags, so each column is copied by a scalar subquery
    in a VALUES row, wrapped in the constructor of its element type.
    """
    from playhouse_vec.schema import library_models
    database = vec_model._meta.database
    content = vec_model._meta.content
    pk = content._meta.primary_key.column_name
    vec = Entity(vec_model._meta.table_name)
    key = Entity(vec_model._meta.primary_key.column_name)

    def where_key(prefix):
        return NodeList((SQL('WHERE'), key, SQL('='), _row(prefix, [pk])))

    def delete(prefix):
        return NodeList((SQL('DELETE FROM'), vec, where_key(prefix)))

    columns = [c.field for c in vec_model._vec.columns.values()
               if c.role not in ('rowid', 'primary key')]
    values = []
    for field in columns:
        old = NodeList((SQL('SELECT'), Entity(field.column_name),
                        SQL('FROM'), vec, where_key('OLD')), parens=True)
        storage = getattr(field, 'storage', None)
        values.append(storage.typed(old) if storage is not None else old)
    move = NodeList((
        SQL('INSERT INTO'), vec,
        NodeList([key] + [Entity(f.column_name) for f in columns],
                 glue=', ', parens=True),
        SQL('VALUES'),
        NodeList([_row('NEW', [pk])] + values, glue=', ', parens=True)))
    State = library_models(database).rows
    move_state = NodeList((
        SQL('UPDATE OR REPLACE'), Entity(State._meta.table_name),
        SQL('SET'), Entity(State.row.column_name), SQL('='),
        _row('NEW', [pk]), SQL('WHERE'), Entity(State.index.column_name),
        SQL('='), _literal(vec_model._meta.table_name), SQL('AND'),
        Entity(State.row.column_name), SQL('='), _row('OLD', [pk])))
    when = NodeList((
        SQL('WHEN'), _row('OLD', [pk]), SQL('IS NOT'), _row('NEW', [pk]),
        SQL('AND EXISTS (SELECT 1 FROM'), vec, where_key('OLD'), SQL(')')))
    ad, au = vec_trigger_names(vec_model)
    _create_trigger(database, ad, SQL('AFTER DELETE'), content,
                    [delete('OLD')])
    _create_trigger(database, au, NodeList((
        SQL('AFTER UPDATE OF'), Entity(pk))), content,
        [delete('NEW'), move, delete('OLD'), move_state], when=when)
    register_database(database, recursive_triggers=True)


def drop_triggers(database, names):
    for name in names:
        database.execute_sql(_render(database, [
            SQL('DROP TRIGGER IF EXISTS'), Entity(name)]))
