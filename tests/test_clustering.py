import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from playhouse_vec.clustering import assign
from playhouse_vec.clustering import bit_codes
from playhouse_vec.clustering import kmeans
from playhouse_vec.clustering import level_thresholds
from playhouse_vec.clustering import nearest_lists
from playhouse_vec.clustering import residuals


def hamming(a, b):
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^
                             np.frombuffer(b, np.uint8)).sum())


def test_codes_are_packed_lsb_first_as_sqlite_vec_reads_them():
    x = np.array([[1., -1., 1., 1., -1., -1., -1., 1.]], np.float32)
    code, = bit_codes(x, np.zeros((1, 8), np.float32))
    assert code == bytes([0b10001101])        # Element 0 is bit 0.


def test_thresholds_split_each_element_into_equally_frequent_levels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30000, 4)) * [1, 2, 5, 0.1] + [0, 1, -3, 7]
    thresholds = level_thresholds(x, 3)
    assert thresholds.shape == (3, 4) and thresholds.dtype == np.float32
    levels = (x[:, None, :] > thresholds[None]).sum(axis=1)
    for column in levels.T:
        np.testing.assert_allclose(np.bincount(column, minlength=4) / 30000.,
                                   0.25, atol=0.005)
    # One bit: the median.
    np.testing.assert_allclose(level_thresholds(x, 1)[0],
                               np.median(x, axis=0), rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_hamming_distance_counts_levels_apart(bits, bytes_, seed):
    """The thermometer code's Hamming distance is the sum, over elements,
    of how many levels apart the two vectors' elements are."""
    rng = np.random.default_rng(seed)
    dims = 8 * bytes_
    sample = rng.normal(size=(64, dims)).astype(np.float32)
    thresholds = level_thresholds(sample, bits)
    a, b = rng.normal(size=(2, dims)).astype(np.float32)
    codes = bit_codes(np.stack([a, b]), thresholds)

    def level(v):
        return (v[None] > thresholds).sum(axis=0)

    assert hamming(*codes) == int(np.abs(level(a) - level(b)).sum())
    assert len(codes[0]) == dims * bits // 8


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(1)
    centers = np.eye(16, dtype=np.float32)[:4] * 10
    x = np.concatenate([c + rng.normal(size=(200, 16)) for c in centers])
    centroids = kmeans(x, 4, 'l2')
    labels = assign(x, centroids, 'l2')
    # Each true cluster lands in one list, and no two share one.
    groups = labels.reshape(4, 200)
    assert all(len(set(g)) == 1 for g in groups)
    assert len(set(groups[:, 0])) == 4
    with pytest.raises(ValueError, match='cannot make 5 lists'):
        kmeans(x[:4], 5, 'l2')


def test_cosine_lists_are_spherical():
    rng = np.random.default_rng(2)
    x = residuals(rng.normal(size=(500, 8)), None, 'cosine')
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)
    centroids = kmeans(x, 8, 'cosine')
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1,
                               rtol=1e-5)
    # The probes are the lists with the largest dot product, in list order.
    q = x[0]
    probes = nearest_lists(q, centroids, 'cosine', 3)
    assert probes == sorted(np.argsort(-(centroids @ q))[:3].tolist())
    assert nearest_lists(q, centroids, 'cosine', 8) == list(range(8))
