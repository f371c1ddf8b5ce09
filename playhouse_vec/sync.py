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

from playhouse_vec.database import require_recursive_triggers


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


def compare_keys(index, content_keys, index_keys, stale=False):
    """An IndexReport from two SELECTs of keys (content and index)."""
    content_set = set(row[0] for row in content_keys.tuples())
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


def _create_trigger(database, name, event, content, statements):
    body = [NodeList((statement, SQL(';'))) for statement in statements]
    sql = _render(database, [
        SQL('CREATE TRIGGER IF NOT EXISTS'), Entity(name), event,
        SQL('ON'), Entity(content._meta.table_name), SQL('BEGIN'),
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
    require_recursive_triggers(database)


def vec_trigger_names(vec_model):
    return [vec_model._meta.table_name + '_ad']


def install_vec_triggers(vec_model):
    """Delete a vec0 row when its content row is deleted."""
    database = vec_model._meta.database
    content = vec_model._meta.content
    pk = content._meta.primary_key.column_name
    delete = NodeList((
        SQL('DELETE FROM'), Entity(vec_model._meta.table_name), SQL('WHERE'),
        Entity(vec_model._meta.primary_key.column_name), SQL('='),
        _row('OLD', [pk])))
    _create_trigger(database, vec_trigger_names(vec_model)[0],
                    SQL('AFTER DELETE'), content, [delete])
    require_recursive_triggers(database)


def drop_triggers(database, names):
    for name in names:
        database.execute_sql(_render(database, [
            SQL('DROP TRIGGER IF EXISTS'), Entity(name)]))
