import numpy as np
import pytest
from peewee import Model
from peewee import TextField

from playhouse_vec import VectorField

from conftest import brute_force


def make_doc(db, **field_kwargs):
    class Doc(Model):
        name = TextField(default='')
        embedding = VectorField(**field_kwargs)

        class Meta:
            database = db

    db.create_tables([Doc])
    return Doc


@pytest.mark.parametrize('value', [
    [1.5, -2.0, 3.25],
    (1.5, -2.0, 3.25),
    np.array([1.5, -2.0, 3.25], dtype=np.float64),
    np.array([1.5, -2.0, 3.25], dtype=np.float32),
    np.array([1.5, -2.0, 3.25], dtype=np.float32).tobytes(),
])
def test_float32_inputs_round_trip(db, value):
    Doc = make_doc(db, dimensions=3)
    Doc.create(embedding=value)
    stored = Doc.get().embedding
    assert isinstance(stored, np.ndarray) and stored.dtype == np.float32
    np.testing.assert_array_equal(stored, [1.5, -2.0, 3.25])


def test_float64_is_converted_not_reinterpreted(db):
    Doc = make_doc(db, dimensions=2)
    Doc.create(embedding=np.array([0.1, 0.2]))
    blob = db.execute_sql('select embedding from doc').fetchone()[0]
    assert len(blob) == 8  # Two float32s, not one float64 read as two.
    np.testing.assert_allclose(Doc.get().embedding, [0.1, 0.2], rtol=1e-7)


@pytest.mark.parametrize('value, message', [
    ([1.0, 2.0], 'has 2 dimensions, expected 3'),
    ([1.0, float('nan'), 2.0], 'NaN or infinity'),
    ([1.0, float('inf'), 2.0], 'NaN or infinity'),
    ([1e39, 0.0, 0.0], 'NaN or infinity'),  # Overflows float32.
    (np.zeros((3, 1)), 'one-dimensional'),
    ('[1, 2, 3]', 'must be a list'),
    (np.zeros(3).tobytes()[:12] + b'\x00' * 12, 'float64 bytes'),
    (b'\x00' * 5, 'has 5 bytes, expected 12'),
    (['a', 'b', 'c'], 'expected numbers'),
])
def test_bad_vectors_are_rejected_before_writing(db, value, message):
    Doc = make_doc(db, dimensions=3)
    with pytest.raises(ValueError, match=message):
        Doc.create(embedding=value)
    assert Doc.select().count() == 0


@pytest.mark.parametrize('options', [
    dict(), dict(element_type='int8'), dict(quantize='int8'),
    dict(matryoshka=True)])
def test_zero_vectors_have_no_cosine_distance(db, options):
    from playhouse_vec import VecModel
    Doc = type('Doc', (VecModel,), {
        'embedding': VectorField(4, metric='cosine', **options),
        'Meta': type('Meta', (), {'database': db, 'table_name': 'docvec'})})
    db.create_tables([Doc])
    zero = [0, 0, 0, 0]
    with pytest.raises(ValueError, match='all zeros'):
        Doc.create(embedding=[-0.0, 0, -0.0, -0.0])
    # A vector of the bytes that make zeros (00, 80) is not one.
    tiny = np.frombuffer(b'\x80\x00\x00\x00' * 4, '<f4')
    if 'element_type' not in options:
        packed = Doc.embedding.to_bytes(tiny)
        if options.get('quantize') == 'int8':    # 127 / 1e-43 overflowed.
            assert np.frombuffer(packed, np.int8).tolist() == [127] * 4
    for write in (lambda: Doc.create(embedding=zero),
                  lambda: Doc.insert_many([{'embedding': [1, 0, 0, 0]},
                                           {'embedding': zero}]).execute(),
                  lambda: list(Doc.knn(zero, k=1))):
        with pytest.raises(ValueError, match='all zeros'):
            write()
    assert Doc.select().count() == 0
    make_doc(db, dimensions=4).create(embedding=zero)      # l2: fine.
    if 'quantize' not in options:   # (int8 codes keep cosine only)
        Doc.create(embedding=[1, 0, 0, 0])
        assert Doc.select(Doc.embedding.l1_distance(zero)).scalar() == 1


def test_nan_in_bytes_is_rejected(db):
    Doc = make_doc(db, dimensions=2)
    with pytest.raises(ValueError, match='NaN'):
        Doc.create(embedding=np.array([np.nan, 1], np.float32).tobytes())


@pytest.mark.parametrize('kwargs, message', [
    (dict(dimensions=0), 'from 1 to 8192'),
    (dict(dimensions=8193), 'from 1 to 8192'),
    (dict(dimensions=12, element_type='bit'), 'multiple of 8'),
    (dict(dimensions=8, element_type='float16'), 'element_type'),
    (dict(dimensions=8, metric='dot'), "metric 'dot'"),
    (dict(dimensions=8, element_type='bit', metric='cosine'), 'hamming'),
])
def test_bad_declarations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorField(**kwargs)


@pytest.mark.parametrize('metric', ['l2', 'cosine', 'l1'])
def test_exact_search_on_ordinary_table_matches_numpy(db, rng, metric):
    Doc = make_doc(db, dimensions=16)
    vectors = rng.normal(size=(200, 16))
    with db.atomic():
        for i, vector in enumerate(vectors):
            Doc.create(name=str(i), embedding=vector)
    query = rng.normal(size=16)
    method = getattr(Doc.embedding, '%s_distance' % metric)
    rows = list(Doc
                .select(Doc.name, method(query).alias('d'))
                .order_by(method(query))
                .limit(5)
                .tuples())
    truth = brute_force(vectors, query, metric)
    expected = np.argsort(truth)[:5]
    assert [int(name) for name, _ in rows] == expected.tolist()
    np.testing.assert_allclose([d for _, d in rows], truth[expected],
                               rtol=1e-5, atol=1e-6)


def test_distance_uses_the_field_metric(db, rng):
    Doc = make_doc(db, dimensions=4, metric='cosine')
    Doc.create(embedding=[1, 0, 0, 0])
    d = Doc.select(Doc.embedding.distance([2, 0, 0, 0])).scalar()
    assert abs(d) < 1e-6  # Cosine: same direction.


def test_distance_in_where_clause(db):
    Doc = make_doc(db, dimensions=2)
    Doc.create(name='near', embedding=[0, 1])
    Doc.create(name='far', embedding=[10, 10])
    names = [d.name for d in
             Doc.select().where(Doc.embedding.l2_distance([0, 0]) < 2)]
    assert names == ['near']


def test_int8_on_ordinary_table(db, rng):
    Doc = make_doc(db, dimensions=8, element_type='int8')
    vectors = rng.integers(-128, 128, size=(50, 8))
    for i, vector in enumerate(vectors):
        Doc.create(name=str(i), embedding=vector)
    stored = Doc.get(Doc.name == '0').embedding
    assert stored.dtype == np.int8
    np.testing.assert_array_equal(stored, vectors[0])
    query = rng.integers(-128, 128, size=8)
    rows = list(Doc.select(Doc.name)
                .order_by(Doc.embedding.l2_distance(query)).limit(3).tuples())
    truth = brute_force(vectors, query, 'l2')
    assert [int(r[0]) for r in rows] == np.argsort(truth)[:3].tolist()


@pytest.mark.parametrize('value, message', [
    ([0.5] * 8, 'non-integer'),
    ([200] + [0] * 7, 'int8 range'),
])
def test_int8_rejects_what_it_cannot_hold(db, value, message):
    Doc = make_doc(db, dimensions=8, element_type='int8')
    with pytest.raises(ValueError, match=message):
        Doc.create(embedding=value)


def test_bit_vectors_and_hamming(db, rng):
    Doc = make_doc(db, dimensions=16, element_type='bit')
    bits = rng.integers(0, 2, size=(30, 16)).astype(bool)
    for i, vector in enumerate(bits):
        Doc.create(name=str(i), embedding=vector)
    np.testing.assert_array_equal(Doc.get(Doc.name == '3').embedding,
                                  bits[3])
    query = rng.integers(0, 2, size=16)
    rows = list(Doc.select(Doc.name,
                           Doc.embedding.hamming_distance(query).alias('d'))
                .tuples())
    truth = (bits != query.astype(bool)).sum(axis=1)
    assert sorted((int(n), int(d)) for n, d in rows) == \
        list(enumerate(truth.tolist()))
    # Packed bytes (LSB first, like vec_quantize_binary) are accepted too.
    packed = np.packbits(bits[0], bitorder='little').tobytes()
    assert Doc.select().where(
        Doc.embedding.hamming_distance(packed) == 0).count() >= 1
    with pytest.raises(ValueError, match='only 0/1'):
        Doc.create(embedding=[2] * 16)
    with pytest.raises(ValueError, match='cosine distance is not available'):
        Doc.embedding.cosine_distance(query)
