"""
FTSModel: an SQLite FTS5 full-text index that follows a content model.

This is an **FTS5** model, built on Peewee's ``FTS5Model`` (in Peewee,
the name ``FTSModel`` means FTS3/4). The text is stored once, in the
content model; triggers keep the index in step with every write::

    class NoteFTS(FTSModel):
        title = SearchField()
        body = SearchField()

        class Meta:
            database = db
            content = Note                 # external content: Note.title...

    db.create_tables([Note, NoteFTS])
    for note in NoteFTS.search('how do I install?', k=5,
                               weights={'title': 3.0}):
        print(note.title, note.score)      # Note instances, best first
"""
import re
import unicodedata

from peewee import DatabaseError
from peewee import ImproperlyConfigured
from peewee import JOIN
from peewee import Join
from peewee import SQL
from peewee import fn
from playhouse.sqlite_ext import FTS5Model
from playhouse.sqlite_ext import SearchField

from playhouse_vec.database import register_database
from playhouse_vec.schema import IDENTIFIER
from playhouse_vec.schema import DerivedMetadata
from playhouse_vec.schema import DerivedSchemaManager
from playhouse_vec.schema import check_content
from playhouse_vec.schema import ddl_of
from playhouse_vec.schema import has_integer_key
from playhouse_vec.schema import library_version
from playhouse_vec.sync import IndexReport
from playhouse_vec.sync import compare_keys
from playhouse_vec.sync import fts_trigger_names
from playhouse_vec.sync import install_fts_triggers
from playhouse_vec.sync import shadow_table


# Letters and digits only: every such run is at least one token for the
# unicode61 tokenizer (and porter on top of it), and needs no escaping.
WORD = re.compile(r'[^\W_]+')
DEFAULT_TOKENIZE = 'porter unicode61 remove_diacritics 2'
# Function words of English questions ("how do I ..."), which match most
# documents and only add noise and time to an OR query: pronouns, articles,
# auxiliaries, the filler verbs of questions ("how can I get / use ...")
# and the pieces WORD splits contractions into ("don't" -> don, t).
ENGLISH_STOPWORDS = frozenset("""
a about after all also am an and any are as at be been before being but by
can could did do does doing for from had has have having how i if in into is
it its just me my of on or our should so some than that the their them then
there these they this those to too us was we were what when where which who
whom why will with would you your
able get make need possible use using want way
aren couldn d didn doesn don hasn haven isn ll m re s shouldn t ve wasn
weren won wouldn
""".split())


def text_query(text, operator='OR', stopwords=()):
    """
    Turn what a person typed into an FTS5 query that always parses.

    Each distinct word becomes a quoted string, joined by ``operator``
    (``'OR'``: any word may match and bm25 ranks documents with more and
    rarer words first; ``'AND'``: every word must match). Words in
    ``stopwords`` are left out, unless nothing else is left. Returns None
    when the text has no words::

        >>> text_query('C++ "unbalanced NEAR(')
        '"c" OR "unbalanced" OR "near"'
    """
    if str(operator).upper() not in ('OR', 'AND'):
        raise ValueError("operator must be 'OR' or 'AND', got %r."
                         % (operator,))
    operator = operator.upper()
    # Composed first: a decomposed accent (NFD text from macOS or a PDF)
    # is no letter and would split its word.
    text = unicodedata.normalize('NFC', text or '')
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text)))
    words = [w for w in words if w not in stopwords] or words
    if not words:
        return None
    return (' %s ' % operator).join('"%s"' % word for word in words)


class FTSModel(FTS5Model):
    """
    An FTS5 full-text index, usually over a content model.

    Declare one ``SearchField`` per indexed column of the content model
    (same names). ``Meta`` options: ``content`` (the content model),
    ``tokenize`` (default ``'porter unicode61 remove_diacritics 2'``:
    English stemming; use ``'unicode61 remove_diacritics 2'`` for other
    languages), ``prefix`` (prefix-index lengths), ``weights`` (default
    bm25 weights per field, e.g. ``{'title': 2.0}``) and ``stopwords``
    (words :meth:`search` leaves out of a query; English function words
    by default, ``()`` for none).

    :meth:`search` takes text as a person types it; :meth:`search_raw`
    takes FTS5 query syntax.
    """
    class Meta:
        schema_manager_class = DerivedSchemaManager
        model_metadata_class = DerivedMetadata
        content = None
        tokenize = DEFAULT_TOKENIZE
        prefix = None
        weights = None
        stopwords = ENGLISH_STOPWORDS
        on_schema_change = 'raise'

    @classmethod
    def validate_model(cls):
        FTS5Model.validate_model.__func__(cls)
        content = cls._meta.content
        if content is None:
            return
        check_content(cls)
        key = content._meta.primary_key
        if not has_integer_key(content):
            raise ImproperlyConfigured(
                '%s needs an integer primary key on %s: FTS5 keys its rows '
                'by integer rowid, and %s.%s is %s. Give %s an integer key '
                '(the default id AutoField) and declare %s unique=True.' % (
                    cls.__name__, content.__name__, content.__name__,
                    getattr(key, 'name', key), type(key).__name__,
                    content.__name__, getattr(key, 'name', 'that field')))
        columns = content._meta.columns
        for field in cls._search_fields():
            if field.column_name not in columns:
                same = content._meta.fields.get(field.name)
                hint = '' if same is None else (
                    ' (%s.%s is stored in column %r: declare %s = '
                    'SearchField(column_name=%r))' % (
                        content.__name__, field.name, same.column_name,
                        field.name, same.column_name))
                raise ImproperlyConfigured(
                    '%s.%s has no column %r in its content model %s%s; name '
                    'each SearchField after a column of %s.' % (
                        cls.__name__, field.name, field.column_name,
                        content.__name__, hint, content.__name__))
        register_database(cls._meta.database, recursive_triggers=True)

    @classmethod
    def clean_options(cls, options):
        meta = cls._meta
        options = dict(options)
        if meta.content is not None:
            options.setdefault('content', meta.content)
            column = meta.content._meta.primary_key.column_name
            if not IDENTIFIER.match(column):
                column = '"%s"' % column.replace('"', '""')
            options.setdefault('content_rowid', column)
        if meta.tokenize:
            options.setdefault('tokenize', meta.tokenize)
        if meta.prefix:
            options.setdefault('prefix', meta.prefix)
        return super(FTSModel, cls).clean_options(options)

    _fill_on_create = True

    @classmethod
    def fingerprint(cls):
        """What this index is built with (stored at creation, compared at
        every start-up)."""
        return {'kind': 'fts5', 'library': library_version(),
                'ddl': ddl_of(cls), 'columns': cls.content_columns(),
                'tokenize': cls._meta.tokenize,
                'content': getattr(cls._meta.content, '__name__', None)}

    @classmethod
    def _check_can_fill(cls):
        if cls._meta.content is None:
            raise ImproperlyConfigured(
                '%s has no content model to rebuild from.' % cls.__name__)

    @classmethod
    def _fill_index(cls):
        if cls._meta.content is not None:
            cls.rebuild()   # Index what the content table holds.

    @classmethod
    def _sync_triggers(cls):
        install_fts_triggers(cls, cls.content_columns())

    @classmethod
    def _sync_trigger_names(cls):
        return fts_trigger_names(cls)

    @classmethod
    def _search_field(cls, name, option):
        """The search field ``name`` (a field or its name) names."""
        fields = dict((f.name, f) for f in cls._search_fields())
        field = fields.get(getattr(name, 'name', name))
        if field is None:
            raise ValueError('%s=%r: %s has no search field of that name; '
                             'choose one of %s.' % (
                                 option, name, cls.__name__,
                                 ', '.join(sorted(fields))))
        return field

    @classmethod
    def _search_fields(cls):
        return [f for f in cls._meta.sorted_fields
                if isinstance(f, SearchField)]

    @classmethod
    def content_columns(cls):
        """The content columns the index holds, in FTS column order."""
        return [f.column_name for f in cls._search_fields()]

    @classmethod
    def weight_list(cls, weights=None):
        """bm25 weights, one per column, from a dict by field or name."""
        weights = cls._meta.weights if weights is None else weights
        fields = cls._search_fields()
        if not weights:
            return [1.0] * len(fields)
        if isinstance(weights, dict):
            # By name: a field of the FTS model or of its content model.
            names = set(f.name for f in fields)
            by_name = dict((getattr(k, 'name', k), w)
                           for k, w in weights.items())
            unknown = [k for k in weights if getattr(k, 'name', k)
                       not in names]
            if unknown:
                raise ValueError('%s has no search field %s.' % (
                    cls.__name__, ', '.join(map(repr, unknown))))
            return [float(by_name.get(f.name, 1.0)) for f in fields]
        weights = [float(w) for w in weights]
        if len(weights) != len(fields):
            raise ValueError('%s needs %d weights, got %d.' % (
                cls.__name__, len(fields), len(weights)))
        return weights

    @classmethod
    def search(cls, text, k=10, weights=None, operator='OR', snippet=None,
               highlight=None, stopwords=None):
        """
        Search with text as a person types it; it never raises an FTS5
        syntax error. Returns content-model instances (FTS rows without a
        content model), best first, each with ``score`` (higher is better)
        and, if asked for, ``snippet`` / ``highlight``. Filters on the
        content model added with ``.where()`` apply before the top-k::

            NoteFTS.search('install peewee', k=5).where(Note.course == 'ml')

        :param weights: bm25 weight per field, e.g. ``{'title': 3.0}``.
        :param operator: ``'OR'`` (any word) or ``'AND'`` (every word).
        :param snippet: ``True`` (best column) or a field name.
        :param highlight: a field name.
        :param stopwords: words to leave out (default ``Meta.stopwords``).
        """
        if stopwords is None:
            stopwords = cls._meta.stopwords or ()
        return cls._search(text_query(text, operator, stopwords), k,
                           weights, snippet, highlight)

    @classmethod
    def search_raw(cls, query, k=10, weights=None, snippet=None,
                   highlight=None):
        """
        Search with an FTS5 query (phrases, NEAR, AND/OR/NOT, prefix*,
        column filters), for power users; invalid syntax raises
        ``OperationalError``::

            NoteFTS.search_raw('title:install AND pip*')
        """
        return cls._search(query, k, weights, snippet, highlight)

    @classmethod
    def _search(cls, query, k, weights, snippet, highlight):
        rank = cls.bm25(*cls.weight_list(weights))
        columns = [(rank * -1).alias('score')]
        if snippet is True:  # The column that matches best.
            columns.append(fn.snippet(cls._meta.entity, -1, '[', ']', '...',
                                      16).alias('snippet'))
        elif snippet is not None:
            columns.append(cls._search_field(snippet, 'snippet')
                           .snippet('[', ']').alias('snippet'))
        if highlight is not None:
            columns.append(cls._search_field(highlight, 'highlight')
                           .highlight('[', ']').alias('highlight'))
        content = cls._meta.content
        if content is None:
            select, key = cls.select(cls, *columns), cls.rowid
        else:
            key = content._meta.primary_key
            # CROSS JOIN keeps the index as the outer loop: otherwise SQLite
            # may walk the content rows (say, by a course index) and run
            # the MATCH once per row.
            select = (content
                      .select(content, *columns)
                      .from_(Join(cls, content, JOIN.CROSS, on=(
                          content._meta.primary_key == cls.rowid))))
        match = cls.match(query) if query else SQL('0')
        return select.where(match).order_by(rank, key).limit(k)

    @classmethod
    def check_index(cls):
        """Compare the index with its content model (an IndexReport).

        ``missing``/``extra`` list rowids the index lacks or holds without
        content; ``stale`` means indexed text differs from the content
        (FTS5 checks the whole index at once, so this is known only when
        no rows are missing or extra: ``stale`` is None then).
        """
        content = cls._meta.content
        if content is None:
            raise ImproperlyConfigured('%s has no content model to check '
                                       'against.' % cls.__name__)
        docsize = shadow_table(cls, '_docsize', ('id',))
        report = compare_keys(cls.__name__,
                              content.select(content._meta.primary_key),
                              docsize.select(docsize.id))
        if report.ok:
            try:
                cls.integrity_check(rank=1)
            except DatabaseError as exc:
                # FTS5 reports a mismatch as corruption; anything else (a
                # locked database, say) is no answer.
                if 'malformed' not in str(exc) and \
                        'corrupt' not in str(exc):
                    raise
                report.stale = True
        else:
            report.stale = None
        return report


__all__ = ['FTSModel', 'IndexReport', 'SearchField', 'text_query']
