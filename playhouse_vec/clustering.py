"""
Inverted lists for ``VectorField(lists=N)``: k-means centroids, and which
list a vector belongs to; and the bit codes of ``quantize='bit'``.

Vectors are clustered around their mean: embeddings share a large common
component, and clusters of the raw vectors would mostly differ in it (the
bits of ``quantize='bit'`` are taken from the same residuals). For the
cosine metric vectors are unit-normalised first and the clustering is
spherical (unit centroids, nearest by dot product); for l2 and l1 it is
Lloyd's k-means, nearest by Euclidean distance::

    x = residuals(vectors, center, 'cosine')
    centroids = kmeans(x[::10], 256, 'cosine')
    lists = assign(x, centroids, 'cosine')                  # int array
    probe = nearest_lists(residuals(q, None, 'cosine')[0], centroids,
                          'cosine', 32)
    codes = bit_codes(x, level_thresholds(x[::10], 3))    # bytes per row

For cosine, a query is compared with the centroids as it is, not as a
residual (see ``VecModel.probed_lists``).
"""
import numpy as np


ITERATIONS = 15
SEED = 0


def _unit(x):
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def residuals(vectors, center, metric):
    """Rows of ``vectors`` (unit-normalised for cosine) minus ``center``
    (None: no centre yet), as a float32 matrix."""
    x = np.atleast_2d(np.asarray(vectors, np.float32))
    if metric == 'cosine':
        x = _unit(x)
    return x if center is None else x - center


def level_thresholds(residuals, bits):
    """``bits`` thresholds per element (a (bits, dims) float32 array): the
    quantiles that split a sample of residuals into ``bits + 1`` equally
    frequent levels (``bits=1``: the median)."""
    fractions = np.arange(1, bits + 1) / float(bits + 1)
    return np.quantile(residuals, fractions, axis=0).astype(np.float32)


def bit_codes(residuals, thresholds):
    """The bit vectors (packed LSB-first, as sqlite-vec reads them) of the
    rows of a residual matrix: for each threshold row, 1 where an element
    is above it. The Hamming distance between two codes sums how many
    levels apart their elements are (a thermometer code)."""
    above = np.concatenate([residuals > t for t in thresholds], axis=1)
    return [row.tobytes()
            for row in np.packbits(above, axis=1, bitorder='little')]


def _scores(residuals, centroids, metric):
    """Higher is nearer: dot products for cosine, -||x - c||^2 + ||x||^2
    (the same order as the Euclidean distance) otherwise."""
    if metric == 'cosine':
        return _unit(residuals) @ centroids.T
    return 2 * residuals @ centroids.T - (centroids ** 2).sum(axis=1)


def kmeans(residuals, count, metric, iterations=ITERATIONS, seed=SEED):
    """``count`` centroids (float32) of the rows of ``residuals``."""
    rng = np.random.default_rng(seed)
    x = np.asarray(residuals, np.float32)
    if metric == 'cosine':
        x = _unit(x)
    if len(x) < count:
        raise ValueError('%d vectors cannot make %d lists; train with at '
                         'least as many vectors as lists.' % (len(x), count))
    centroids = x[rng.choice(len(x), count, replace=False)].copy()
    for _ in range(iterations):
        labels = assign(x, centroids, metric)
        sizes = np.bincount(labels, minlength=count)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        sums = np.zeros_like(centroids)
        empty = sizes == 0
        sums[~empty] = np.add.reduceat(x[np.argsort(labels, kind='stable')],
                                       starts[~empty], axis=0)
        # An empty list restarts from a random vector.
        sums[empty] = x[rng.choice(len(x), int(empty.sum()))]
        sizes[empty] = 1
        centroids = (sums / sizes[:, None]).astype(np.float32)
        if metric == 'cosine':
            centroids = _unit(centroids)
    return centroids.astype(np.float32)


def assign(residuals, centroids, metric, batch=8192):
    """The list of each row of ``residuals`` (an int64 array)."""
    out = np.empty(len(residuals), np.int64)
    for lo in range(0, len(residuals), batch):
        scores = _scores(residuals[lo:lo + batch], centroids, metric)
        out[lo:lo + batch] = np.argmax(scores, axis=1)
    return out


def nearest_lists(query, centroids, metric, probes):
    """The ``probes`` lists nearest to one query (unit-normalised for
    cosine, a residual for l2 and l1), as ints."""
    scores = _scores(query[None], centroids, metric)[0]
    if probes >= len(scores):
        return list(range(len(scores)))
    return sorted(np.argpartition(-scores, probes)[:probes].tolist())
