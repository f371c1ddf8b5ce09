import re

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import Model
from peewee import SQL
from peewee import TextField
from peewee import fn

from playhouse_vec import FTSModel
from playhouse_vec import SearchField
from playhouse_vec import VecModel
from playhouse_vec import VectorField
from playhouse_vec import hybrid_search

from conftest import new_database

WORDS = ['install', 'peewee', 'vector', 'query', 'join', 'pip', 'index',
         'sqlite', 'course', 'docker', 'python', 'model']


def make(db, dims=4, **field):
    class Note(Model):
        title = TextField()
        group = IntegerField()

        class Meta:
            database = db

    class NoteFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = db
            content = Note
            stopwords = ()

    class NoteVec(VecModel):
        embedding = VectorField(dims, metric='cosine', **field)

        class Meta:
            database = db
            content = Note

    db.create_tables([Note, NoteFTS, NoteVec])
    return Note, NoteFTS, NoteVec


def fill(models, rng, n, dims=4):
    Note, _, NoteVec = models
    for i in range(n):
        words = rng.choice(WORDS, size=rng.integers(1, 6))
        note = Note.create(title=' '.join(words), group=int(i % 3))
        NoteVec.create(rowid=note.id, embedding=rng.normal(size=dims))


def python_fusion(legs, weights, rrf_k, fusion):
    """Reference fusion over each leg's own (id, lower-is-better) list."""
    scores = {}
    for name, hits in legs.items():
        hits = sorted(hits, key=lambda hit: (hit[1], hit[0]))
        values = [value for _, value in hits]
        for rank, (doc_id, value) in enumerate(hits, 1):
            if fusion == 'rrf':
                part = weights[name] / (rrf_k + rank)
            else:
                spread = max(values) - min(values)
                part = weights[name] * ((max(values) - value) / spread
                                        if spread > 0 else 1.0)
            scores[doc_id] = scores.get(doc_id, 0.0) + part
    return scores


def leg_hits(models, text, vector, depth, group):
    Note, NoteFTS, NoteVec = models
    legs = {}
    if vector is not None:
        query = NoteVec.knn(vector, k=depth)
        if group is not None:
            query = query.where(Note.group == group)
        legs['vec'] = [(r.rowid, r.distance) for r in query]
    if text is not None:
        query = NoteFTS.search(text, k=depth).select(
            Note.id, NoteFTS.bm25().alias('b'))
        if group is not None:
            query = query.where(Note.group == group)
        legs['fts'] = [(r.id, r.b) for r in query]
    return legs


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 80),
       k=st.integers(1, 15), depth=st.integers(1, 30),
       rrf_k=st.sampled_from([1, 10, 60]),
       weights=st.sampled_from([(1, 1), (1, 2), (0.3, 1.7), (2, 0)]),
       fusion=st.sampled_from(['rrf', 'minmax']),
       legs=st.sampled_from(['both', 'text', 'vector']),
       group=st.sampled_from([None, 0, 2]),
       options=st.sampled_from([{}, dict(quantize='int8'),
                                dict(quantize='bit', oversample=2),
                                dict(lists=4, probes=1)]))
def test_fused_order_equals_python_fusion(seed, n, k, depth, rrf_k, weights,
                                          fusion, legs, group, options):
    # Quantized and listed vector legs too: the leg is knn(k=depth).
    rng = np.random.default_rng(seed)
    db = new_database()
    models = make(db, dims=8, **options)
    fill(models, rng, n, dims=8)
    if 'lists' in options and n >= 4 or options.get('quantize') == 'bit':
        models[2].train()
    Note = models[0]
    text = ' '.join(rng.choice(WORDS, 2)) if legs != 'vector' else None
    vector = rng.normal(size=8) if legs != 'text' else None
    weight_map = {'vec': weights[0], 'fts': weights[1]}
    query = hybrid_search(models[2], models[1], text=text, vector=vector,
                          k=k, depth=depth, rrf_k=rrf_k, weights=weight_map,
                          fusion=fusion)
    if group is not None:
        query = query.where(Note.group == group)
    rows = list(query)
    scores = python_fusion(leg_hits(models, text, vector, depth, group),
                           weight_map, rrf_k, fusion)
    expected = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    assert len(rows) == min(k, len(expected))
    np.testing.assert_allclose([r.score for r in rows],
                               [s for _, s in expected[:k]], rtol=1e-9)
    # Both sides break score ties by id, so the orders match exactly.
    assert [r.id for r in rows] == [i for i, _ in expected[:k]]
    for row in rows:
        assert row.group == group if group is not None else True
    db.close()


@pytest.fixture
def models(db):
    models = make(db)
    fill(models, np.random.default_rng(3), 200)
    return models


def test_rows_carry_scores_ranks_and_leg_values(models):
    Note, NoteFTS, NoteVec = models
    rows = list(hybrid_search(NoteVec, NoteFTS, text='docker python',
                              vector=[1, 0, 0, 0], k=10, fusion='rrf',
                              weights={'vec': 1, 'fts': 1}))
    assert len(rows) == 10 and all(isinstance(r, Note) for r in rows)
    assert [r.score for r in rows] == sorted((r.score for r in rows),
                                             reverse=True)
    both = [r for r in rows if r.vec_rank and r.fts_rank]
    assert both, 'some rows should be found by both legs'
    row = both[0]
    assert row.distance is not None and row.bm25 < 0
    assert abs(row.score - (1 / (60 + row.vec_rank) +
                            1 / (60 + row.fts_rank))) < 1e-12
    one_leg = [r for r in rows if not (r.vec_rank and r.fts_rank)]
    for r in one_leg:
        assert (r.distance is None) == (r.vec_rank is None)


def test_integer_weights_do_not_zero_scores(models):
    _, NoteFTS, NoteVec = models
    rows = list(hybrid_search(NoteVec, NoteFTS, text='docker',
                              vector=[1, 0, 0, 0], fusion='rrf', rrf_k=60,
                              weights={'vec': 1, 'fts': 2}))
    assert all(r.score > 0 for r in rows)


def test_filters_apply_inside_both_legs(models):
    Note, NoteFTS, NoteVec = models
    Note.update(group=9).where(Note.id.in_([7, 77, 177])).execute()
    rows = list(hybrid_search(NoteVec, NoteFTS, text='docker python sqlite',
                              vector=[0, 1, 0, 0], k=10, depth=10)
                .where(Note.group == 9))
    assert sorted(r.id for r in rows) == [7, 77, 177]
    with pytest.raises(ValueError, match='content model') as info:
        list(hybrid_search(NoteVec, NoteFTS, text='x', k=3)
             .where(NoteVec.rowid > 3))
    assert '"rowid" > ?) (3,) on NoteVec' in str(info.value)


def test_one_leg_only_and_empty_text(models):
    Note, NoteFTS, NoteVec = models
    text_only = list(hybrid_search(NoteVec, NoteFTS, text='docker', k=5))
    plain = list(NoteFTS.search('docker', k=5))
    assert [r.id for r in text_only] == [r.id for r in plain]
    assert all(r.vec_rank is None for r in text_only)
    vector_only = list(hybrid_search(NoteVec, NoteFTS, vector=[0, 0, 1, 0],
                                     k=5))
    knn = list(NoteVec.knn([0, 0, 1, 0], k=5))
    assert [r.id for r in vector_only] == [r.rowid for r in knn]
    # Punctuation only: the text leg finds nothing, the vector leg rules.
    rows = list(hybrid_search(NoteVec, NoteFTS, text='?!',
                              vector=[0, 0, 1, 0], k=5))
    assert [r.id for r in rows] == [r.rowid for r in knn]


def test_paging_and_sql_shape(models):
    _, NoteFTS, NoteVec = models
    query = hybrid_search(NoteVec, NoteFTS, text='pip index',
                          vector=[1, 1, 0, 0], k=10)
    ids = [r.id for r in query]
    assert [r.id for r in query.clone().limit(3).offset(2)] == ids[2:5]
    sql = query.sql()[0]
    assert sql.count('MATERIALIZED') == 2 and 'FULL' not in sql
    assert sql.startswith('WITH') and 'UNION ALL' in sql


def test_bad_arguments(db, models):
    Note, NoteFTS, NoteVec = models

    class Loose(VecModel):
        embedding = VectorField(4)

        class Meta:
            database = db

    with pytest.raises(ValueError, match='same Meta.content'):
        hybrid_search(Loose, NoteFTS, text='x')
    with pytest.raises(ValueError, match='text, vector, or both'):
        hybrid_search(NoteVec, NoteFTS)
    with pytest.raises(ValueError, match='fusion must be'):
        hybrid_search(NoteVec, NoteFTS, text='x', fusion='max')
    with pytest.raises(ValueError, match="weights keys"):
        hybrid_search(NoteVec, NoteFTS, text='x', weights={'text': 2})
    with pytest.raises(ValueError, match='k must be a positive'):
        hybrid_search(NoteVec, NoteFTS, text='x', k=0)
    with pytest.raises(ValueError, match='vec_model must be a VecModel, '
                       'got <Model: NoteFTS>'):
        hybrid_search(NoteFTS, NoteVec, text='x')
    for name in ('k', 'depth'):       # (True is an int to Python.)
        with pytest.raises(ValueError, match='%s must be a positive' % name):
            hybrid_search(NoteVec, NoteFTS, text='x', **{name: True})
    with pytest.raises(ValueError, match='dimensions'):
        hybrid_search(NoteVec, NoteFTS, vector=[1, 2])


def test_default_fusion_is_the_tuned_min_max_blend(models):
    _, NoteFTS, NoteVec = models
    rows = list(hybrid_search(NoteVec, NoteFTS, text='docker python',
                              vector=[1, 0, 0, 0], k=10))
    best = rows[0]
    assert best.score <= 2.5 and all(0 <= r.score for r in rows)
    explicit = list(hybrid_search(NoteVec, NoteFTS, text='docker python',
                                  vector=[1, 0, 0, 0], k=10, depth=20,
                                  fusion='minmax',
                                  weights={'vec': 1.0, 'fts': 1.5}))
    assert [(r.id, r.score) for r in rows] == \
        [(r.id, r.score) for r in explicit]


def test_inverted_lists_in_the_vector_leg_lose_no_rows(db):
    # One probed list of 32 rarely holds the 20 rows of a rare group: the
    # vector leg then reads every list, as knn() does on its own.
    Note, NoteFTS, NoteVec = make(db, dims=8, lists=32, probes=1)
    rng = np.random.default_rng(3)
    n = 2000
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    groups = np.where(rng.random(n) < 0.01, 1, 0)
    with db.atomic():
        Note.insert_many([{'title': 'note', 'group': int(g)} for g in groups]
                         ).execute()
        NoteVec.insert_many([{'rowid': i + 1, 'embedding': v}
                             for i, v in enumerate(vectors)]).execute()
    NoteVec.train()
    q = rng.normal(size=8).astype(np.float32)
    rare = np.flatnonzero(groups == 1) + 1
    assert 10 <= len(rare) < 40
    found = hybrid_search(NoteVec, NoteFTS, vector=q, k=10, depth=10) \
        .where(Note.group == 1)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = rare[np.argsort(-(unit[rare - 1] @ q))][:10]
    assert [note.id for note in found] == truth.tolist()
    # Both legs, no filter: the probed list suffices and is used.
    both = hybrid_search(NoteVec, NoteFTS, text='note', vector=q, k=10)
    assert len(list(both)) == 10
    assert 'embedding_list" IN' in both.sql()[0]


@pytest.mark.parametrize('options', [
    dict(quantize='bit', oversample=4), dict(quantize='int8'),
    dict(lists=8, probes=2, quantize='bit', oversample=4)])
def test_quantized_vector_leg_follows_knn(db, options):
    # The vector leg is the model's own knn() with k = depth: rescored
    # bits (exact distances, not Hamming), int8 codes and inverted lists
    # with their all-lists fallback (no row twice) rank as knn() does.
    Note, NoteFTS, NoteVec = make(db, dims=16, **options)
    fill((Note, NoteFTS, NoteVec), np.random.default_rng(4), 300, dims=16)
    NoteVec.train()
    q = np.random.default_rng(5).normal(size=16)
    for group in (None, 2):
        vector_only = hybrid_search(NoteVec, NoteFTS, vector=q, k=8,
                                    depth=8)
        knn = NoteVec.knn(q, k=8)
        if group is not None:
            vector_only = vector_only.where(Note.group == group)
            knn = knn.join(Note, on=(Note.id == NoteVec.rowid)).where(
                Note.group == group)
        expected = [(r.rowid, r.distance) for r in knn]
        rows = list(vector_only)
        assert [(r.id, r.vec_rank) for r in rows] == \
            [(i, rank) for rank, (i, _) in enumerate(expected, 1)]
        np.testing.assert_allclose([r.distance for r in rows],
                                   [d for _, d in expected], rtol=1e-6)
        both = list(hybrid_search(NoteVec, NoteFTS, text='docker python',
                                  vector=q, k=8))
        assert len(both) == 8


def test_select_subsets_and_fused_columns(models):
    Note, NoteFTS, NoteVec = models

    def search():
        return hybrid_search(NoteVec, NoteFTS, text='docker python',
                             vector=[1, 0, 0, 0], k=8)
    full = list(search())
    assert [r.title for r in search().select(Note.title)] == \
        [r.title for r in full]
    assert list(search().select(Note.title).tuples()) == \
        [(r.title,) for r in full]
    rows = list(search().select(
        Note.id, SQL('score'), (SQL('vec_rank') * 10).alias('rank10'),
        fn.UPPER(Note.title).alias('upper')).dicts())
    assert rows == [{'id': r.id, 'score': r.score,
                     'rank10': r.vec_rank and r.vec_rank * 10,
                     'upper': r.title.upper()} for r in full]
    # The fused columns of a missing leg are NULL.
    text_only = hybrid_search(NoteVec, NoteFTS, text='docker', k=3)
    assert [r.distance for r in text_only.select(Note.id, SQL('distance'))
            ] == [None] * 3
    with pytest.raises(ValueError, match='columns must read') as info:
        list(search().select(Note.id, NoteVec.embedding))
    assert '"embedding" on NoteVec' in str(info.value)
    with pytest.raises(ValueError, match=r'\.from_\(\)'):
        list(search().from_(NoteVec))


def test_joins_are_read_by_key_and_filter_inside_both_legs(db):
    class Author(Model):
        name = TextField()

        class Meta:
            database = db

    class Post(Model):
        title = TextField()
        author = ForeignKeyField(Author, backref='posts')

        class Meta:
            database = db

    class PostFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = db
            content = Post

    class PostVec(VecModel):
        embedding = VectorField(4)

        class Meta:
            database = db
            content = Post

    db.create_tables([Author, Post, PostFTS, PostVec])
    rng = np.random.default_rng(7)
    rare, common = Author.create(name='rare'), Author.create(name='common')
    for i in range(120):
        post = Post.create(title=' '.join(rng.choice(WORDS, 3)),
                           author=rare if i % 10 == 0 else common)
        PostVec.create(rowid=post.id, embedding=rng.normal(size=4))

    def search():
        return hybrid_search(PostVec, PostFTS, text='docker python',
                             vector=[1, 0, 0, 0], k=6, depth=6)
    expected = [(r.id, r.score) for r in search()
                .where(Post.author == rare.id)]
    rows = list(search().join(Author).where(Author.name == 'rare')
                .select(Post, Author, SQL('score')))
    assert len(rows) == 6
    assert [(r.id, r.score) for r in rows] == expected
    assert all(r.author.name == 'rare' for r in rows)
    assert all('author' in r.__rel__ for r in rows)     # Joined, not lazy.
    # No filter: the joined rows of the fused list, in its order.
    plain = list(search())
    joined = list(search().join(Author).select(Post.id, Author.name))
    assert [(r.id, r.author.name) for r in joined] == \
        [(r.id, r.author.name) for r in plain]
    with pytest.raises(ValueError, match='filters must read'):
        list(search().where(Author.name == 'rare'))    # Not joined.


def test_orderings_and_aggregates_are_refused(models):
    Note, NoteFTS, NoteVec = models

    def search():
        return hybrid_search(NoteVec, NoteFTS, text='docker',
                             vector=[1, 0, 0, 0], k=5)
    ids = [r.id for r in search()]
    assert [r.id for r in search().order_by(SQL('score').desc())] == ids
    for query in (search().order_by(Note.title),
                  search().order_by(SQL('score')),
                  search().order_by(Note.id.desc())):
        with pytest.raises(ValueError, match='ordered by fused score'):
            list(query)
    for query, method in ((search().group_by(Note.group), 'group_by'),
                          (search().having(Note.group > 1), 'having'),
                          (search().distinct(), 'distinct'),
                          (search().select(fn.COUNT(Note.id)),
                           'select(<aggregate>)')):
        with pytest.raises(ValueError, match=r'\.%s\(\) is not supported'
                           % re.escape(method)):
            list(query)
    assert search().count() == len(ids)     # (COUNT around the search.)
    # MIN and MAX of two values are no aggregates.
    assert [r.id for r in search().select(
        Note.id, fn.MIN(Note.group, 5).alias('g'))] == ids
    # The workaround the message gives.
    found = search().select(Note.id)
    assert sorted(r.id for r in Note.select().where(Note.id.in_(found))) \
        == sorted(ids)


def test_field_chooses_the_vector_column(db):
    class Doc(Model):
        title = TextField()

        class Meta:
            database = db

    class DocFTS(FTSModel):
        title = SearchField()

        class Meta:
            database = db
            content = Doc

    class DocVec(VecModel):
        title_vec = VectorField(2)
        body_vec = VectorField(3)

        class Meta:
            database = db
            content = Doc

    db.create_tables([Doc, DocFTS, DocVec])
    rng = np.random.default_rng(2)
    for i in range(30):
        doc = Doc.create(title='doc %d' % i)
        DocVec.create(rowid=doc.id, title_vec=rng.normal(size=2),
                      body_vec=rng.normal(size=3))
    q = [0.2, -1, 0.5]
    rows = list(hybrid_search(DocVec, DocFTS, vector=q, k=5,
                              field=DocVec.body_vec))
    knn = DocVec.knn(q, k=5, field=DocVec.body_vec)
    assert [(r.id, r.distance) for r in rows] == \
        [(r.rowid, r.distance) for r in knn]
    both = hybrid_search(DocVec, DocFTS, text='doc', vector=[1, 0], k=5,
                         field=DocVec.title_vec)
    assert len(list(both)) == 5
    with pytest.raises(ValueError, match='several vector columns') as info:
        hybrid_search(DocVec, DocFTS, text='doc', vector=q)
    assert 'DocVec.title_vec or DocVec.body_vec' in str(info.value)
    with pytest.raises(ValueError, match='DocVec.title_vec or '
                       'DocVec.body_vec.*got <TextField: Doc.title>'):
        hybrid_search(DocVec, DocFTS, vector=q, field=Doc.title)
    with pytest.raises(ValueError, match='has 3 dimensions, expected 2'):
        hybrid_search(DocVec, DocFTS, vector=q, field=DocVec.title_vec)
