"""
VectorField: float32, int8 and bit vectors stored as compact BLOBs.

On an ordinary table the field is a BLOB column and offers exact search
in plain SQL through the pgvector-style distance methods::

    class Doc(Model):
        embedding = VectorField(384, metric='cosine')

    Doc.select().order_by(Doc.embedding.cosine_distance(q)).limit(5)

On a :class:`VecModel` the same field declares a vec0 vector column.
"""
import math
import numbers

import numpy as np
from peewee import Field
from peewee import ImproperlyConfigured
from peewee import Node
from peewee import Value
from peewee import fn

from playhouse_vec.database import register_database


METRICS = {
    'l2': fn.vec_distance_l2,
    'cosine': fn.vec_distance_cosine,
    'l1': fn.vec_distance_l1,
    'hamming': fn.vec_distance_hamming,
}


class PackedVector(bytes):
    """A vector already checked and packed for one field's column."""
    __slots__ = ()


class ElementType(object):
    """How one vector element type is checked, packed and read back."""
    dtype = None   # numpy dtype of one element, where it is a whole byte+.

    def __init__(self, name, constructor, metrics, default_metric):
        self.name = name
        self.constructor = constructor  # SQL function that tags the BLOB.
        self.metrics = metrics
        self.default_metric = default_metric

    def nbytes(self, dimensions):
        return dimensions * 4 if self.name == 'float32' else (
            dimensions if self.name == 'int8' else dimensions // 8)

    def pack(self, array, field):
        raise NotImplementedError

    def unpack(self, blob, dimensions):
        raise NotImplementedError

    def typed(self, node):
        """Wrap a BLOB so sqlite-vec reads it as this element type."""
        return self.constructor(node) if self.constructor else node


class Float32(ElementType):
    dtype = np.dtype('<f4')

    def pack(self, array, field):
        if array.dtype.kind not in 'fiu':
            raise field.error('has elements of type %s; expected numbers'
                              % array.dtype)
        if array.dtype != self.dtype:
            with np.errstate(over='ignore', invalid='ignore'):
                array = array.astype('<f4')
        # Finite iff every element is: a float64 sum of float32 values
        # cannot overflow, and NaN and infinities carry through.
        if not math.isfinite(array.sum(dtype=np.float64)):
            raise field.error('contains NaN or infinity (after conversion '
                              'to float32); every element must be finite')
        return array.tobytes()

    def check_bytes(self, blob, field):
        self.pack(np.frombuffer(blob, '<f4'), field)

    def unpack(self, blob, dimensions):
        return np.frombuffer(blob, '<f4').copy()


class Int8(ElementType):
    dtype = np.dtype(np.int8)

    def pack(self, array, field):
        if array.dtype.kind == 'f':
            if not np.isfinite(array).all() or \
                    (array != np.round(array)).any():
                raise field.error(
                    'has non-integer values; an int8 vector holds integers '
                    'in [-128, 127]. Quantize first, e.g. '
                    'np.round(x * 127 / np.abs(x).max())')
        elif array.dtype.kind not in 'iub':
            raise field.error('has elements of type %s; expected integers'
                              % array.dtype)
        if array.size and (array.min() < -128 or array.max() > 127):
            raise field.error('has values outside the int8 range '
                              '[-128, 127]')
        return array.astype(np.int8).tobytes()

    def check_bytes(self, blob, field):
        pass

    def unpack(self, blob, dimensions):
        return np.frombuffer(blob, np.int8).copy()


class Bit(ElementType):
    def pack(self, array, field):
        if array.dtype.kind not in 'biuf' or not np.isin(array, (0, 1)).all():
            raise field.error('must hold only 0/1 or booleans (one element '
                              'per bit)')
        return np.packbits(array.astype(bool), bitorder='little').tobytes()

    def check_bytes(self, blob, field):
        pass

    def unpack(self, blob, dimensions):
        bits = np.unpackbits(np.frombuffer(blob, np.uint8), bitorder='little')
        return bits[:dimensions].astype(bool)


ELEMENT_TYPES = {
    'float32': Float32('float32', None, ('l2', 'cosine', 'l1'), 'l2'),
    'int8': Int8('int8', fn.vec_int8, ('l2', 'cosine', 'l1'), 'l2'),
    'bit': Bit('bit', fn.vec_bit, ('hamming',), 'hamming'),
}


QUANTIZE = ('bit', 'int8')
BITS = 4            # Per element, for quantize='bit'.
OVERSAMPLE = 8      # Candidates per result, for quantize='bit'...
OVERSAMPLE_LISTS = 64  # ...and with lists= (benchmarks/quantization.py).


def quantize_int8(array):
    """float vector -> int8 codes, scaled by 127 / max|x| per vector (the
    fixed [-1, 1] scale wastes most levels on normalised embeddings)."""
    peak = np.abs(array).max() if array.size else 0.0
    if not peak > 0:
        return np.zeros(array.shape, np.int8)
    # Divided first: 127 / peak overflows float32 for tiny vectors.
    return np.clip(np.round(array / peak * 127), -127, 127).astype(np.int8)


class VectorField(Field):
    """
    A fixed-size vector column.

    :param dimensions: number of elements (1 to 8192; a multiple of 8 for
        ``bit``).
    :param metric: ``'l2'`` (default), ``'cosine'`` or ``'l1'`` for float32
        and int8; bit vectors always use ``'hamming'``.
    :param element_type: ``'float32'`` (default), ``'int8'`` or ``'bit'``.
    :param quantize: for float vectors in a VecModel: ``'bit'`` adds a
        bit companion column searched first (Hamming distance), then the
        ``oversample`` times k best candidates are rescored exactly with
        the float vectors; ``'int8'`` stores int8 codes (scaled per
        vector, 4x smaller; cosine only) instead of floats.
    :param oversample: candidates per result for ``quantize='bit'``
        (default 8; 64 with ``lists``, where each probed list gives a few
        times k candidates, so ranking more of them costs little).
    :param bits: bits per element for ``quantize='bit'``, 1 to 8 (default
        4): each element is compared with ``bits`` thresholds (quantiles
        of its values, fitted by ``train()``), so the Hamming distance
        counts how many levels apart two elements are, not only whether
        their signs differ (``bits=1``: classic binary quantization).
        More bits cost little search time and raise recall.
    :param matryoshka: accept longer vectors and keep their first
        ``dimensions`` elements, L2-normalised again (for embeddings
        trained for truncation).
    :param lists: for float vectors in a VecModel: split the rows into this
        many inverted lists (k-means clusters, stored as a hidden vec0
        partition key), so a search reads only the ``probes`` lists nearest
        to the query instead of every vector. Approximate: ``train()``
        fits the lists to the stored vectors; until then every search is
        exact. About ``sqrt(rows)`` lists suit most data.
    :param probes: lists searched per query (default ``lists // 8``; more
        is slower and closer to exact).

    Values may be lists, tuples, numpy arrays (float64 is converted to
    float32, never reinterpreted) or packed bytes; reads return numpy arrays
    (float32, int8, or bool for bit vectors)::

        embedding = VectorField(768, metric='cosine')
        Doc.create(embedding=[0.1] * 768)
        Doc.select().order_by(Doc.embedding.distance(q)).limit(10)
    """
    field_type = 'BLOB'

    def __init__(self, dimensions, metric=None, element_type='float32',
                 quantize=None, oversample=None, bits=None,
                 matryoshka=False, lists=None, probes=None, *args, **kwargs):
        if element_type not in ELEMENT_TYPES:
            raise ValueError('element_type must be one of %s, got %r.' % (
                ', '.join(sorted(ELEMENT_TYPES)), element_type))
        self.element_type = ELEMENT_TYPES[element_type]
        if quantize is not None and (quantize not in QUANTIZE or
                                     element_type != 'float32'):
            raise ValueError('quantize must be %s, for float32 vectors; got '
                             '%r.' % (' or '.join(map(repr, QUANTIZE)),
                                      quantize))
        if quantize == 'bit' and dimensions % 8:
            raise ValueError('quantize="bit" needs a multiple of 8 '
                             'dimensions, got %d.' % dimensions)
        if quantize == 'int8' and metric != 'cosine':
            raise ValueError('quantize="int8" scales each vector on its own, '
                             'which only cosine distance ignores; use '
                             'metric="cosine".')
        if oversample is None:
            oversample = OVERSAMPLE_LISTS if lists else OVERSAMPLE
        if not isinstance(oversample, numbers.Integral) or \
                isinstance(oversample, bool) or oversample < 1:
            raise ValueError('oversample must be a positive integer, got %r.'
                             % (oversample,))
        if bits is not None and (
                quantize != 'bit' or not isinstance(bits, numbers.Integral)
                or isinstance(bits, bool) or not 1 <= bits <= 8):
            raise ValueError('bits must be an integer from 1 to 8, with '
                             'quantize="bit"; got %r.' % (bits,))
        if lists is not None and (
                not isinstance(lists, numbers.Integral) or
                not 2 <= lists <= 65536 or element_type != 'float32'):
            raise ValueError('lists must be an integer from 2 to 65536, for '
                             'float32 vectors; got %r.' % (lists,))
        if lists is None and probes is not None:
            raise ValueError('probes applies to inverted lists; set lists '
                             'too, e.g. VectorField(768, lists=256, '
                             'probes=32).')
        self.lists = None if lists is None else int(lists)
        self.probes = self._check_probes(probes) if lists else None
        self.quantize = quantize
        self.oversample = int(oversample)
        self.bits = (BITS if bits is None else int(bits)) \
            if quantize == 'bit' else None
        self.matryoshka = bool(matryoshka)
        # What the column holds: int8 codes for quantize='int8'.
        self.storage = ELEMENT_TYPES['int8'] if quantize == 'int8' else \
            self.element_type
        if not isinstance(dimensions, numbers.Integral) or \
                not 1 <= dimensions <= 8192:
            raise ValueError('dimensions must be an integer from 1 to 8192, '
                             'got %r.' % (dimensions,))
        if element_type == 'bit' and dimensions % 8:
            raise ValueError('bit vectors need a multiple of 8 dimensions, '
                             'got %d.' % dimensions)
        if quantize == 'bit' and dimensions * self.bits > 8192:
            raise ValueError(
                'quantize="bit" with bits=%d makes %d-bit codes of %d '
                'dimensions, above vec0\'s 8192; use bits=%d or fewer (or '
                'matryoshka truncation to fewer dimensions).' % (
                    self.bits, dimensions * self.bits, dimensions,
                    max(1, 8192 // dimensions)))
        metric = metric or self.element_type.default_metric
        if metric not in self.element_type.metrics:
            raise ValueError('metric %r is not available for %s vectors; '
                             'choose one of %s.' % (
                                 metric, element_type,
                                 ', '.join(self.element_type.metrics)))
        self.dimensions = int(dimensions)
        self.metric = metric
        super(VectorField, self).__init__(*args, **kwargs)

    def _check_probes(self, probes):
        if probes is None:
            return max(1, self.lists // 8)
        if not isinstance(probes, numbers.Integral) or \
                isinstance(probes, bool) or probes < 1:
            raise ValueError('probes must be a positive integer, got %r.'
                             % (probes,))
        return int(probes)

    def bind(self, model, name, set_attribute=True):
        super(VectorField, self).bind(model, name, set_attribute)
        if (self.quantize == 'bit' or self.lists) and \
                not getattr(model, '_vector_index', False):
            option = 'quantize="bit"' if self.quantize == 'bit' else 'lists'
            raise ImproperlyConfigured(
                '%s.%s: %s builds a vector index, which needs a VecModel '
                '(a vec0 table); %s is a plain model. Declare the field on '
                'a VecModel, or drop the option for exact search.' % (
                    model.__name__, name, option, model.__name__))
        register_database(model._meta.database)

    def error(self, message):
        return ValueError('%s %s.' % (self._label(), message))

    def _label(self):
        if getattr(self, 'model', None) is not None:
            return 'Vector for %s.%s' % (self.model.__name__, self.name)
        return 'Vector'

    def to_bytes(self, value, metric=None):
        """Validate a vector and pack it as the BLOB sqlite-vec expects
        (for distances by ``metric``, the field's own by default)."""
        if type(value) is PackedVector and \
                len(value) == self.storage.nbytes(self.dimensions):
            return value
        etype = self.element_type
        if (self.matryoshka or self.quantize) and \
                isinstance(value, (bytes, bytearray, memoryview)) and \
                len(value) % 4 == 0:
            value = np.frombuffer(bytes(value), '<f4')
        if isinstance(value, (bytes, bytearray, memoryview)):
            blob = bytes(value)
            expected = etype.nbytes(self.dimensions)
            if len(blob) != expected:
                hint = ''
                if etype.name == 'float32' and len(blob) == 2 * expected:
                    hint = ' (float64 bytes? pass the numpy array instead)'
                raise self.error('has %d bytes, expected %d for %d %s '
                                 'elements%s' % (len(blob), expected,
                                                 self.dimensions, etype.name,
                                                 hint))
            etype.check_bytes(blob, self)
            return self._directed(blob, metric)
        if isinstance(value, str) or value is None:
            raise self.error('must be a list, tuple, numpy array or bytes, '
                             'got %s' % type(value).__name__)
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise self.error('could not be read as an array (%s)' % exc)
        if array.ndim != 1:
            raise self.error('must be one-dimensional, got shape %s'
                             % (array.shape,))
        if self.matryoshka and array.shape[0] > self.dimensions:
            array = self._truncate(array)
        if array.shape[0] != self.dimensions:
            raise self.error('has %d dimensions, expected %d' % (
                array.shape[0], self.dimensions))
        blob = etype.pack(array, self)
        if self.quantize == 'int8':
            blob = quantize_int8(np.frombuffer(blob, '<f4')).tobytes()
        return self._directed(blob, metric)

    def _directed(self, blob, metric):
        """``blob``, unless it is all zeros where the metric is cosine: it
        has no direction, and its distance to anything would be NaN."""
        # Zeros are bytes 00 and 80 (the sign of -0.0): a first nonzero
        # byte of another value settles it without reading further.
        rest = blob.lstrip(b'\x00')
        if (metric or self.metric) == 'cosine' and (not rest or (
                rest[0] == 0x80 and
                not np.frombuffer(blob, self.storage.dtype).any())):
            raise self.error('is all zeros, which has no cosine distance '
                             '(it would be NaN); leave the row out or use '
                             "metric='l2'")
        return blob

    def _truncate(self, array):
        array = np.asarray(array, np.float64)[:self.dimensions]
        # Scaled by its largest element first: the norm of values near
        # 1e200 overflows (NaN and infinities stay, for pack() to refuse).
        peak = np.abs(array).max() if array.size else 0.0
        if peak > 0 and np.isfinite(peak):
            array = array / peak
        norm = np.linalg.norm(array)
        return array / norm if norm > 0 else array

    def pack(self, value):
        """``value`` checked and packed for this column (a PackedVector,
        which is not checked again on its way to the database)."""
        blob = self.to_bytes(value)
        return blob if type(blob) is PackedVector else PackedVector(blob)

    def pack_many(self, values):
        """``pack()`` of each value. float32 numpy arrays of one shape
        are checked together, several times faster; anything else, or a
        batch that fails a check, one by one (for the precise error)."""
        if self.storage.name == 'float32' and not self.matryoshka and \
                len(values) > 1 and \
                all(type(value) is np.ndarray for value in values):
            packed = self._pack_matrix(values)
            if packed is not None:
                return packed
        return [self.pack(value) for value in values]

    def _pack_matrix(self, values):
        try:
            matrix = np.stack(values)
        except ValueError:                   # Shapes differ.
            return None
        if matrix.shape != (len(values), self.dimensions) or \
                matrix.dtype.kind not in 'fiu':
            return None
        if matrix.dtype != Float32.dtype:
            with np.errstate(over='ignore', invalid='ignore'):
                matrix = matrix.astype(Float32.dtype)
        # The checks of Float32.pack and _directed, row by row.
        if not np.isfinite(matrix.sum(axis=1, dtype=np.float64)).all() or \
                (self.metric == 'cosine' and not matrix.any(axis=1).all()):
            return None
        return [PackedVector(row) for row in matrix]

    def stored_matrix(self, packed):
        """float32 matrix of the stored values of packed vectors (int8
        codes for ``quantize='int8'``)."""
        matrix = np.frombuffer(b''.join(packed), self.storage.dtype)
        return matrix.reshape(len(packed), self.dimensions).astype(
            np.float32)

    def db_value(self, value):
        if value is None or isinstance(value, Node):
            return value
        blob = self.to_bytes(value)
        # vec0 reads untagged BLOBs as float32, so int8 and bit values
        # written to a vec0 table are wrapped in vec_int8() / vec_bit().
        if getattr(self.model, '_is_vec_model', False):
            return self.storage.typed(Value(blob, unpack=False))
        return blob

    def python_value(self, value):
        if value is None or isinstance(value, np.ndarray):
            return value
        return self.storage.unpack(bytes(value), self.dimensions)

    def sql_value(self, value, metric=None):
        """A query vector as a SQL value tagged with this element type."""
        if isinstance(value, Node):
            return value
        # converter=False: the bytes are checked here, not again on render.
        return self.storage.typed(Value(self.to_bytes(value, metric),
                                        converter=False, unpack=False))

    def _distance(self, metric, value):
        if metric not in self.element_type.metrics:
            raise ValueError('%s distance is not available for %s vectors '
                             '(%s.%s); use %s.' % (
                                 metric, self.element_type.name,
                                 self.model.__name__, self.name,
                                 ' or '.join(self.element_type.metrics)))
        if self.quantize == 'int8' and metric != 'cosine':
            raise ValueError('%s.%s stores int8 codes, each vector scaled on '
                             'its own, which keeps cosine distances only; '
                             'use cosine_distance().' % (
                                 self.model.__name__, self.name))
        register_database(self.model._meta.database)
        return METRICS[metric](self.storage.typed(self),
                               self.sql_value(value, metric))

    def distance(self, value):
        """Distance to ``value`` with the field's own metric."""
        return self._distance(self.metric, value)

    def l2_distance(self, value):
        """Euclidean distance to ``value``."""
        return self._distance('l2', value)

    def cosine_distance(self, value):
        """Cosine distance (1 - cosine similarity) to ``value``."""
        return self._distance('cosine', value)

    def l1_distance(self, value):
        """Manhattan distance to ``value``."""
        return self._distance('l1', value)

    def hamming_distance(self, value):
        """Number of differing bits (bit vectors)."""
        return self._distance('hamming', value)
