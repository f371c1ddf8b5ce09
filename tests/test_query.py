import numpy as np
import peewee
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from peewee import BooleanField
from peewee import FloatField
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import Model
from peewee import TextField
from peewee import fn

from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import register_database
from playhouse_vec.query import K_MAX

from conftest import assert_nearest
from conftest import brute_force
from conftest import new_database


def pairs(query):
    return [(row.rowid, row.distance) for row in query]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), dims=st.integers(1, 48),
       metric=st.sampled_from(['l2', 'cosine', 'l1']),
       k=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1),
       scale=st.sampled_from([1e-3, 1.0, 100.0]))
def test_knn_equals_numpy_brute_force(n, dims, metric, k, seed, scale):
    rng = np.random.default_rng(seed)
    db = new_database()

    class Item(VecModel):
        embedding = VectorField(dims, metric=metric)

        class Meta:
            database = db

    db.create_tables([Item])
    vectors = (rng.normal(size=(n, dims)) * scale).astype(np.float32)
    if metric == 'cosine':  # Zero vectors have no cosine distance.
        vectors[np.linalg.norm(vectors, axis=1) == 0] = 1.0
    Item.insert_many([{'rowid': i + 1, 'embedding': v}
                      for i, v in enumerate(vectors)]).execute()
    query = (rng.normal(size=dims) * scale).astype(np.float32)
    if metric == 'cosine' and not query.any():
        query[0] = 1.0
    truth = brute_force(vectors, query, metric)
    rows = pairs(Item.knn(query, k=k))
    assert_nearest(rows, np.arange(1, n + 1), truth, k)
    db.close()


N = 10000


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """10,000 notes in a content table and a vec0 table sharing rowids."""
    db = new_database(str(tmp_path_factory.mktemp('corpus') / 'c.db'))
    register_database(db)
    rng = np.random.default_rng(7)

    class Note(Model):
        course = TextField()
        title = TextField()

        class Meta:
            database = db

    class Tag(Model):
        note = ForeignKeyField(Note)
        name = TextField()

        class Meta:
            database = db

    class NoteVec(VecModel):
        embedding = VectorField(8, metric='cosine')
        course = TextField()
        year = IntegerField()
        score = FloatField()
        draft = BooleanField()
        user = IntegerField()
        label = TextField()
        body = TextField()

        class Meta:
            database = db
            content = Note
            partition_keys = ('user',)
            auxiliary_columns = ('body',)

    db.create_tables([Note, Tag, NoteVec])
    vectors = rng.normal(size=(N, 8)).astype(np.float32)
    courses = np.array(['ml', 'de', 'mlops', 'llm'])[rng.integers(0, 4, N)]
    courses[rng.choice(N, 50, replace=False)] = 'rare'
    # Values of exactly 12 bytes and longer ones sharing prefixes trip
    # vec0's text range comparisons.
    labels = np.array(['aaaaaaaaaaaa', 'aaaaaaaaaaaba', 'aaaaaaaaaaabaa',
                       'b', 'zzzzzzzzzzzzzzzz'])[rng.integers(0, 5, N)]
    data = dict(
        course=courses, year=rng.integers(2000, 2025, N),
        score=rng.random(N), draft=rng.random(N) < 0.5,
        user=rng.integers(0, 5, N), label=labels,
        body=np.array(['body %d' % i for i in range(N)]))
    with db.atomic():
        Note.insert_many([(i + 1, courses[i], 'title %d' % i)
                          for i in range(N)],
                         fields=[Note.id, Note.course, Note.title]).execute()
        Tag.insert_many([(i + 1, 'tag%d' % (i % 200)) for i in range(N)],
                        fields=[Tag.note, Tag.name]).execute()
        rows = []
        for i in range(N):
            row = dict((name, values[i].item())
                       for name, values in data.items())
            row.update(rowid=i + 1, embedding=vectors[i])
            rows.append(row)
        for start in range(0, N, 1000):
            NoteVec.insert_many(rows[start:start + 1000]).execute()
    query = rng.normal(size=8).astype(np.float32)
    truth = brute_force(vectors, query, 'cosine')
    yield dict(db=db, Note=Note, Tag=Tag, NoteVec=NoteVec, query=query,
               truth=truth, data=data, vectors=vectors, rng=rng)
    db.close()


def check(corpus, query, mask, k=10):
    """The KNN rows are exactly the k nearest among rows where mask."""
    ids = np.flatnonzero(mask) + 1
    rows = pairs(query)
    assert_nearest(rows, ids, corpus['truth'][ids - 1], k)
    return rows


def test_content_filter_50_of_10000_returns_the_true_10(corpus):
    NoteVec, Note = corpus['NoteVec'], corpus['Note']
    mask = corpus['data']['course'] == 'rare'
    assert mask.sum() == 50
    rows = check(corpus, NoteVec.knn(corpus['query'], k=10)
                 .where(Note.course == 'rare'), mask)
    assert len(rows) == 10
    # The same through an explicit join to the content model.
    joined = (NoteVec.knn(corpus['query'], k=10)
              .join(Note, on=(Note.id == NoteVec.rowid))
              .where(Note.course == 'rare'))
    check(corpus, joined, mask)


def test_metadata_filter_50_of_10000(corpus):
    NoteVec = corpus['NoteVec']
    mask = corpus['data']['course'] == 'rare'
    check(corpus, NoteVec.knn(corpus['query'], k=10)
          .where(NoteVec.course == 'rare'), mask)


def test_join_filter_on_a_third_table(corpus):
    NoteVec, Tag = corpus['NoteVec'], corpus['Tag']
    query = (NoteVec.knn(corpus['query'], k=10)
             .join(Tag, on=(Tag.note == NoteVec.rowid))
             .where(Tag.name == 'tag7'))
    mask = (np.arange(N) % 200) == 7
    check(corpus, query, mask)


def filter_cases(NoteVec, Note, data, Tag):
    course, year, score = data['course'], data['year'], data['score']
    draft, user, label = data['draft'], data['user'], data['label']
    body = data['body']
    ids = np.arange(1, N + 1)
    return [
        # Filters vec0 applies inside the KNN.
        (NoteVec.year >= 2020, year >= 2020),
        (NoteVec.year.between(2003, 2005), (year >= 2003) & (year <= 2005)),
        (NoteVec.score < 0.01, score < 0.01),
        (NoteVec.draft == True, draft),  # noqa: E712
        (NoteVec.course.in_(['rare', 'llm']), np.isin(course, ['rare',
                                                               'llm'])),
        (NoteVec.year.in_([2001, 2002]), np.isin(year, [2001, 2002])),
        ((NoteVec.course == 'rare') | (NoteVec.course == 'de'),
         np.isin(course, ['rare', 'de'])),
        (NoteVec.user == 3, user == 3),
        (NoteVec.user > 2, user > 2),
        (NoteVec.rowid.in_(list(range(1, 400, 7))), ((ids - 1) % 7 == 0) &
         (ids < 400)),
        # Filters vec0 would apply after the top-k, or reject.
        (NoteVec.rowid == 77, ids == 77),
        (NoteVec.rowid.in_([77]), ids == 77),
        (NoteVec.rowid > 9990, ids > 9990),
        (NoteVec.course.not_in(['ml', 'de', 'mlops']),
         ~np.isin(course, ['ml', 'de', 'mlops'])),
        (~(NoteVec.course == 'ml'), course != 'ml'),
        (NoteVec.draft, draft),
        (NoteVec.course.startswith('ml'), np.char.startswith(course, 'ml')),
        (NoteVec.course ** 'ML%', np.char.startswith(course, 'ml')),
        (fn.upper(NoteVec.course) == 'RARE', course == 'rare'),
        (NoteVec.user.in_([0, 4]), np.isin(user, [0, 4])),
        (NoteVec.label > 'aaaaaaaaaaaa', label > 'aaaaaaaaaaaa'),
        (NoteVec.label < 'aaaaaaaaaaabaa', label < 'aaaaaaaaaaabaa'),
        (NoteVec.label.between('aaaaaaaaaaaba', 'b'),
         (label >= 'aaaaaaaaaaaba') & (label <= 'b')),
        (NoteVec.body == 'body 5', body == 'body 5'),
        (NoteVec.body.in_(['body 5', 'body 17']), np.isin(body, ['body 5',
                                                                'body 17'])),
        (NoteVec.score.in_([float(score[3])]), score == score[3]),
        # ORs SQLite makes an IN of, which vec0 refuses on floats and
        # booleans and answers with k rows per value on partition keys.
        ((NoteVec.score == float(score[3])) |
         (NoteVec.score == float(score[5])), np.isin(score, score[[3, 5]])),
        ((NoteVec.draft == True) | (NoteVec.draft == False),  # noqa: E712
         draft | ~draft),
        ((NoteVec.user == 1) | (NoteVec.user == 2), np.isin(user, [1, 2])),
        (NoteVec.embedding.l2_distance([0] * 8) < 2.0,
         np.linalg.norm(data['vectors'], axis=1) < 2.0),
        # Several at once, across tables.
        ((NoteVec.year >= 2010) & (Note.title.startswith('title 1')) &
         NoteVec.course.not_in(['ml']),
         (year >= 2010) & np.char.startswith(
             np.array(['title %d' % i for i in range(N)]), 'title 1') &
         (course != 'ml')),
        # An OR across the content model and the vec0 table, not joined.
        (Note.title.startswith('title 12') | (NoteVec.course == 'rare'),
         np.char.startswith(np.array(['title %d' % i for i in range(N)]),
                            'title 12') | (course == 'rare')),
        # Correlated subqueries, on the content model and on vec0 rows.
        (fn.EXISTS(Tag.select().where((Tag.note == Note.id) &
                                      (Tag.name == 'tag7'))),
         (ids - 1) % 200 == 7),
        (fn.EXISTS(Tag.select().where((Tag.note == NoteVec.rowid) &
                                      (Tag.name == 'tag8'))),
         (ids - 1) % 200 == 8),
    ]


@pytest.mark.parametrize('case', range(34))
def test_filters_never_lose_rows(corpus, case):
    NoteVec, Note = corpus['NoteVec'], corpus['Note']
    data = dict(corpus['data'], vectors=corpus['vectors'])
    expression, mask = filter_cases(NoteVec, Note, data, corpus['Tag'])[case]
    for k in (1, 10):
        check(corpus, NoteVec.knn(corpus['query'], k=k).where(expression),
              mask, k)


def test_every_filter_case_is_exercised(corpus):
    data = dict(corpus['data'], vectors=corpus['vectors'])
    assert len(filter_cases(corpus['NoteVec'], corpus['Note'], data,
                            corpus['Tag'])) == 34


def test_text_primary_key_in_with_missing_ids(db, rng):
    class Page(VecModel):
        slug = TextField(primary_key=True)
        embedding = VectorField(4)

        class Meta:
            database = db

    db.create_tables([Page])
    vectors = rng.normal(size=(20, 4))
    Page.insert_many([dict(slug='p%d' % i, embedding=v)
                      for i, v in enumerate(vectors)]).execute()
    rows = list(Page.knn(vectors[0], k=5)
                .where(Page.slug.in_(['p0', 'p3', 'missing'])))
    assert sorted(r.slug for r in rows) == ['p0', 'p3']
    assert rows[0].slug == 'p0'
    assert Page.knn(vectors[0], k=5).where(Page.slug == 'p3').get().slug \
        == 'p3'


def test_distance_ranges(corpus):
    NoteVec, truth = corpus['NoteVec'], corpus['truth']
    query = NoteVec.knn(corpus['query'], k=20).where(
        (NoteVec.distance > 0.2) & (NoteVec.distance <= 0.3))
    check(corpus, query, (truth > 0.2) & (truth <= 0.3), 20)
    with pytest.raises(ValueError, match=r'distance must compare.*got '
                       r'\("t1"."distance" = \?\) \(0.2,\)'):
        list(NoteVec.knn(corpus['query']).where(NoteVec.distance == 0.2))
    with pytest.raises(ValueError, match='k is set by knn'):
        list(NoteVec.knn(corpus['query']).where(NoteVec.k == 3))


@pytest.mark.parametrize('k', [20, K_MAX + 1])
def test_numpy_scalars_in_filters_are_numbers(corpus, k):
    NoteVec, truth, data = corpus['NoteVec'], corpus['truth'], corpus['data']
    query = NoteVec.knn(corpus['query'], k=k).where(
        (NoteVec.distance < np.float32(0.3)) &
        (NoteVec.year >= np.int64(2010)))
    check(corpus, query, (truth < 0.3) & (data['year'] >= 2010), k)
    ids = np.arange(1, 40, dtype=np.int64)
    query = NoteVec.knn(corpus['query'], k=k).where(NoteVec.rowid.in_(ids))
    check(corpus, query, np.isin(np.arange(1, len(truth) + 1), ids), k)
    query = NoteVec.knn(corpus['query'], k=k).where(
        NoteVec.rowid == np.int64(7))
    assert [r.rowid for r in query] == [7]


def test_iterator_and_exists(corpus):
    NoteVec, Note, q = corpus['NoteVec'], corpus['Note'], corpus['query']
    for query in (NoteVec.knn(q, k=5),      # The plain, compiled-once path.
                  NoteVec.knn(q, k=5).where(NoteVec.course == 'rare'),
                  NoteVec.knn(q, k=5).where(Note.course == 'rare')):
        assert [r.rowid for r in query.iterator()] == \
            [r.rowid for r in query.clone()]
        assert query.exists()
    assert not NoteVec.knn(q, k=5).where(NoteVec.course == 'none').exists()
    assert not NoteVec.knn(q, k=5).where(Note.course == 'none').exists()


def test_limit_offset_get_first_and_paging(corpus):
    NoteVec, truth = corpus['NoteVec'], corpus['truth']
    order = np.argsort(truth) + 1
    knn = NoteVec.knn(corpus['query'], k=20)
    assert [r.rowid for r in knn] == order[:20].tolist()
    assert [r.rowid for r in knn.limit(5)] == order[:5].tolist()
    assert [r.rowid for r in knn.limit(5).offset(5)] == order[5:10].tolist()
    assert [r.rowid for r in knn.paginate(3, 5)] == order[10:15].tolist()
    assert [r.rowid for r in knn.limit(50)] == order[:20].tolist()
    assert knn.get().rowid == order[0]
    assert knn.count() == 20
    assert knn.scalar() == order[0]  # Peewee 4.4+ adds LIMIT 1 here.
    assert knn.first().rowid == order[0]  # first() sets LIMIT 1 on knn.
    assert knn.exists()
    # Without k, the LIMIT (plus OFFSET) sets it.
    default = NoteVec.knn(corpus['query'])
    assert default.count() == 10
    assert [r.rowid for r in default.limit(3).offset(2)] == \
        order[2:5].tolist()
    assert NoteVec.knn(corpus['query']).where(NoteVec.course == 'rare') \
        .get().rowid == order[corpus['data']['course'][order - 1] ==
                              'rare'][0]
    assert list(NoteVec.knn(corpus['query'], k=0)) == []
    with pytest.raises(ValueError, match='non-negative integer'):
        NoteVec.knn(corpus['query'], k=-1)


def test_rows_are_model_instances_with_distance_and_joins(corpus):
    NoteVec, Note = corpus['NoteVec'], corpus['Note']
    rows = list(NoteVec.knn(corpus['query'], k=3)
                .select(NoteVec.rowid, NoteVec.distance, Note.title)
                .join(Note, on=(Note.id == NoteVec.rowid)))
    assert all(isinstance(r, NoteVec) for r in rows)
    assert rows[0].note.title == 'title %d' % (rows[0].rowid - 1)
    assert rows[0].distance <= rows[1].distance
    one = NoteVec.knn(corpus['query'], k=3).get()
    assert one.course in ('ml', 'de', 'mlops', 'llm', 'rare')
    assert one.embedding.shape == (8,)
    as_dicts = list(NoteVec.knn(corpus['query'], k=2)
                    .select(NoteVec.rowid, NoteVec.distance).dicts())
    assert set(as_dicts[0]) == {'rowid', 'distance'}


def test_group_by_aggregates_over_the_k_nearest(corpus):
    # GROUP BY a vec0 column alone made vec0 refuse the ORDER BY SQLite
    # asked it for; the k nearest are ranked first, then grouped.
    NoteVec, Note, q = corpus['NoteVec'], corpus['Note'], corpus['query']
    nearest = list(NoteVec.knn(q, k=40).where(NoteVec.year >= 2010))
    expected = {}
    for row in nearest:
        count, best = expected.get(row.course, (0, 2.0))
        expected[row.course] = (count + 1, min(best, row.distance))
    count = fn.COUNT(NoteVec.rowid)
    grouped = (NoteVec.knn(q, k=40)
               .select(NoteVec.course, count.alias('n'),
                       fn.MIN(NoteVec.distance).alias('best'))
               .where(NoteVec.year >= 2010)
               .group_by(NoteVec.course))
    got = dict((c, (n, best)) for c, n, best in grouped.tuples())
    assert set(got) == set(expected)
    for course, (n, best) in got.items():
        assert n == expected[course][0]
        assert abs(best - expected[course][1]) < 1e-6
    # Through a join, with HAVING; LIMIT counts groups, not neighbours.
    joined = (NoteVec.knn(q, k=40)
              .select(Note.course, count.alias('n'))
              .join(Note, on=(Note.id == NoteVec.rowid))
              .where(NoteVec.year >= 2010)
              .group_by(Note.course)
              .having(count >= 5)
              .order_by(count.desc()))
    assert [(c, n) for c, n in joined.tuples()] == sorted(
        [(c, v[0]) for c, v in expected.items() if v[0] >= 5],
        key=lambda item: -item[1])
    assert len(list(joined.limit(1).tuples())) == 1


def test_plain_search_compiles_once_and_matches_the_general_path(corpus):
    NoteVec, rng = corpus['NoteVec'], corpus['rng']
    NoteVec._vec.plain_sql.clear()
    for _ in range(3):
        q = rng.normal(size=8).astype(np.float32)
        plain = list(NoteVec.knn(q, k=7))
        # A filter that keeps every row takes the general path.
        general = list(NoteVec.knn(q, k=7).where(NoteVec.year > 0))
        assert [(r.rowid, r.distance) for r in plain] == \
            [(r.rowid, r.distance) for r in general]
        for a, b in zip(plain, general):
            assert sorted(a.__data__) == sorted(b.__data__)
            assert (a.course, a.year, a.body) == (b.course, b.year, b.body)
            assert np.array_equal(a.embedding, b.embedding)
        assert not any(r.is_dirty() for r in plain)
        assert [r['rowid'] for r in NoteVec.knn(q, k=3).select(
            NoteVec.rowid, NoteVec.distance).dicts()] == \
            [r.rowid for r in plain[:3]]
        assert [r[0] for r in NoteVec.knn(q, k=3).tuples()] == \
            [r.rowid for r in plain[:3]]
    # One statement per column list and row type, reused for new vectors.
    assert len(NoteVec._vec.plain_sql) == 3
    # Aliased columns and other databases are compiled on their own.
    aliased = NoteVec.knn(q, k=2).select(NoteVec.rowid.alias('id'),
                                         NoteVec.distance)
    assert [r.id for r in aliased] == [r.rowid for r in plain[:2]]
    assert len(NoteVec._vec.plain_sql) == 3
    other = new_database()
    with other.bind_ctx([corpus['Note'], NoteVec]):
        other.create_tables([corpus['Note'], NoteVec])
        assert list(NoteVec.knn(q, k=3)) == []
    other.close()
    assert len(NoteVec._vec.plain_sql) == 4


class Grade(IntegerField):
    """Stored as an integer, read back as a letter."""
    def python_value(self, value):
        return 'ABC'[value]


def test_plain_search_converts_only_what_vec0_does_not_type(db, rng):
    # vec0 returns rowid, distance and integer, float and text metadata
    # typed; booleans, fields with their own python_value and auxiliary
    # columns still go through the field's conversion.
    class Doc(VecModel):
        embedding = VectorField(4)
        year = IntegerField()
        score = FloatField()
        course = TextField()
        draft = BooleanField()
        grade = Grade()
        pages = IntegerField()

        class Meta:
            database = db
            auxiliary_columns = ('pages',)

    db.create_tables([Doc])
    Doc.insert_many([dict(rowid=i + 1, embedding=rng.normal(size=4),
                          year=2020 + i, score=i / 2, course='c%d' % i,
                          draft=bool(i % 2), grade=i % 3, pages=10 + i)
                     for i in range(4)]).execute()
    Doc._vec.plain_sql.clear()
    for _ in range(2):          # Compiling the search, then reusing it.
        rows = sorted(Doc.knn(rng.normal(size=4), k=4), key=lambda r: r.year)
        assert len(Doc._vec.plain_sql) == 1
        assert [(r.rowid, r.year, r.score, r.course, r.draft, r.grade,
                 r.pages) for r in rows] == [
            (i + 1, 2020 + i, i / 2, 'c%d' % i, bool(i % 2), 'ABC'[i % 3],
             10 + i) for i in range(4)]
        assert [type(v) for v in (rows[1].draft, rows[1].pages,
                                  rows[1].distance)] == [bool, int, float]
        assert not any(r.is_dirty() for r in rows)


def test_limit_zero_and_numpy_k_do_not_touch_the_plain_search(corpus):
    # LIMIT 0 was taken for no LIMIT (its SQL then served every plain
    # search of that k), and numpy's k reached SQLite as a BLOB.
    NoteVec, q = corpus['NoteVec'], corpus['query']
    NoteVec._vec.plain_sql.clear()
    assert list(NoteVec.knn(q, k=5).limit(0)) == []
    assert len(list(NoteVec.knn(q, k=5))) == 5
    assert list(NoteVec.knn(q, k=5).limit(0)) == []
    assert [r.rowid for r in NoteVec.knn(q, k=np.int64(5))] == \
        [r.rowid for r in NoteVec.knn(q, k=5)]


def test_aggregates_over_the_k_nearest(corpus):
    # SQLite reads the rows of MIN()/MAX() in that column's order, which
    # vec0 refused.
    NoteVec, q = corpus['NoteVec'], corpus['query']
    rows = list(NoteVec.knn(q, k=7).where(NoteVec.year > 2005))
    knn = NoteVec.knn(q, k=7).where(NoteVec.year > 2005)
    assert knn.select(fn.MAX(NoteVec.year)).scalar() == \
        max(r.year for r in rows)
    assert knn.select(fn.MIN(NoteVec.distance).alias('d')).scalar() == \
        pytest.approx(rows[0].distance)
    assert knn.select(fn.COUNT(NoteVec.rowid)).scalar() == 7
    assert knn.select(fn.SUM(NoteVec.year), fn.MIN(NoteVec.year)).tuples()[
        0] == (sum(r.year for r in rows), min(r.year for r in rows))


def test_select_without_arguments_keeps_the_columns_and_sets_filter(corpus):
    NoteVec, q = corpus['NoteVec'], corpus['query']
    expected = [r.rowid for r in NoteVec.knn(q, k=4)]
    assert [r.rowid for r in NoteVec.knn(q, k=4).select()] == expected
    keys = set(np.int64(k) for k in expected[1:3])
    assert [r.rowid for r in NoteVec.knn(q, k=4).where(
        NoteVec.rowid.in_(keys))] == expected[1:3]


def test_k_above_vec0_limit_uses_an_exact_scan(corpus):
    NoteVec, truth = corpus['NoteVec'], corpus['truth']
    k = K_MAX + 904
    rows = check(corpus, NoteVec.knn(corpus['query'], k=k),
                 np.ones(N, bool), k)
    assert len(rows) == k
    mask = corpus['data']['year'] >= 2010
    check(corpus, NoteVec.knn(corpus['query'], k=k)
          .where((NoteVec.year >= 2010) & (NoteVec.distance < 0.9)),
          mask & (truth < 0.9), k)
    rare = corpus['data']['course'] == 'rare'
    check(corpus, NoteVec.knn(corpus['query'], k=k)
          .where(corpus['Note'].course == 'rare'), rare, k)
    page = NoteVec.knn(corpus['query'], k=k).limit(3).offset(4500)
    assert [r.rowid for r in page] == (np.argsort(truth)[4500:4503] +
                                       1).tolist()


def test_other_orderings_are_refused(corpus):
    NoteVec = corpus['NoteVec']
    with pytest.raises(ValueError, match='ordered by distance'):
        list(NoteVec.knn(corpus['query']).order_by(NoteVec.year))
    assert list(NoteVec.knn(corpus['query'], k=2)
                .order_by(NoteVec.distance))


def test_filter_on_unjoined_model_without_content_fails(db, corpus):
    NoteVec, Tag = corpus['NoteVec'], corpus['Tag']
    with pytest.raises(peewee.OperationalError):
        list(NoteVec.knn(corpus['query']).where(Tag.name == 'x'))
