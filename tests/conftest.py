import numpy as np
import peewee
import pytest

from playhouse_vec import register_database


def pytest_report_header(config):
    return 'peewee %s, SQLite %s (%s)' % (
        peewee.__version__, peewee.sqlite3.sqlite_version,
        peewee.sqlite3.__name__)


def new_database(path=':memory:', **kwargs):
    """A SqliteDatabase of the running Peewee (SqliteExtDatabase on 3.x)."""
    return peewee.SqliteDatabase(path, **kwargs)


@pytest.fixture
def db(tmp_path):
    database = new_database(str(tmp_path / 'test.db'))
    register_database(database)
    yield database
    database.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def brute_force(vectors, query, metric):
    """Exact distances in float64 from float32 data, like sqlite-vec's."""
    vectors = np.asarray(vectors, np.float32).astype(np.float64)
    query = np.asarray(query, np.float32).astype(np.float64)
    if metric == 'l2':
        return np.sqrt(((vectors - query) ** 2).sum(axis=1))
    if metric == 'l1':
        return np.abs(vectors - query).sum(axis=1)
    if metric == 'cosine':
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
        return 1.0 - (vectors @ query) / norms
    raise ValueError(metric)


def assert_nearest(rows, ids, distances, k):
    """rows are the k nearest of (ids, distances), ties allowed."""
    ids = np.asarray(ids)
    order = np.argsort(distances, kind='stable')
    expected = np.asarray(distances)[order][:k]
    assert len(rows) == min(k, len(ids))
    by_id = dict(zip(ids.tolist(), distances))
    got_true = np.array([by_id[row_id] for row_id, _ in rows])
    got = np.array([d for _, d in rows])
    np.testing.assert_allclose(got, got_true, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.sort(got_true), expected, rtol=1e-5,
                               atol=1e-5)
    assert list(got) == sorted(got)


def hashed_vectors(texts, dims):
    """Deterministic unit vectors from the texts (a stand-in model for
    tests that need many quick, repeatable embeddings)."""
    import hashlib
    out = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8],
                              'little')
        out.append(np.random.default_rng(seed).normal(size=dims))
    return np.array(out)


def counting_embedder(dims=8, model='hash-v1'):
    """A FunctionEmbedder over hashed_vectors that counts texts embedded."""
    from playhouse_vec import FunctionEmbedder

    def embed(texts):
        embedder.calls += len(texts)
        return hashed_vectors(texts, dims)
    embedder = FunctionEmbedder(embed, dimensions=dims, model=model)
    embedder.calls = 0
    return embedder
