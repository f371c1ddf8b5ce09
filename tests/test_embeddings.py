import hashlib
import json
import time

import numpy as np
import pytest

from playhouse_vec.embeddings import EmbeddingAuthError
from playhouse_vec.embeddings import EmbeddingError
from playhouse_vec.embeddings import EmbeddingModelError
from playhouse_vec.embeddings import EmbeddingQuotaError
from playhouse_vec.embeddings import EmbeddingTimeoutError
from playhouse_vec.embeddings import FunctionEmbedder
from playhouse_vec.embeddings import QUERY_TASKS

genai = pytest.importorskip('google.genai')
from playhouse_vec.embeddings import GoogleEmbedder  # noqa: E402

from fake_gemini import FakeGemini  # noqa: E402
from fake_gemini import fake_vector  # noqa: E402


@pytest.fixture
def fake():
    server = FakeGemini()
    yield server
    server.close()


def google(fake, **kwargs):
    options = dict(api_key='test-key', base_url=fake.url, initial_delay=0.01,
                   max_delay=0.05, retries=2, timeout=5)
    options.update(kwargs)
    return GoogleEmbedder(**options)


def test_batches_tasks_dimensions_on_the_wire(fake):
    embedder = google(fake, dimensions=768)
    texts = ['document %d' % i for i in range(250)]
    vectors = embedder.embed_documents(texts)
    assert vectors.shape == (250, 768) and vectors.dtype == np.float32
    sizes = sorted(len(r['requests']) for r in fake.embed_requests)
    assert sizes == [50, 100, 100]
    for entry in fake.embed_requests:
        assert entry['path'] == \
            '/v1beta/models/gemini-embedding-001:batchEmbedContents'
        assert entry['key'] == 'test-key'
        for item in entry['requests']:
            assert item['taskType'] == 'RETRIEVAL_DOCUMENT'
            assert item['outputDimensionality'] == 768
            assert item['model'] == 'models/gemini-embedding-001'
            assert len(item['content']['parts']) == 1  # One Content each.
            assert 'title' not in item
    # Truncated vectors come back unit length, in input order.
    expected = fake_vector('document 7', 'RETRIEVAL_DOCUMENT')[:768]
    np.testing.assert_allclose(vectors[7], expected / np.linalg.norm(
        expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize('task', QUERY_TASKS)
def test_query_task_types(fake, task):
    embedder = google(fake)
    vector = embedder.embed_query('how do I sort a list?', task=task)
    assert vector.shape == (768,)
    (item,) = fake.embed_requests[-1]['requests']
    assert item['taskType'] == task and 'title' not in item


def test_default_query_task_and_bad_task(fake):
    embedder = google(fake)
    embedder.embed_query('hello')
    assert fake.embed_requests[-1]['requests'][0]['taskType'] == \
        'RETRIEVAL_QUERY'
    with pytest.raises(ValueError, match='Unknown query task'):
        embedder.embed_query('hello', task='CLUSTERING_PLEASE')
    assert len(fake.embed_requests) == 1


def test_titles_are_sent_per_request_group(fake):
    embedder = google(fake, batch_size=2)
    embedder.embed_documents(['a', 'b', 'c', 'd'],
                             titles=['T1', 'T1', 'T1', 'T2'])
    groups = [[(i['title'], i['content']['parts'][0]['text'])
               for i in r['requests']] for r in fake.embed_requests]
    assert sorted(groups) == [[('T1', 'a'), ('T1', 'b')], [('T1', 'c')],
                              [('T2', 'd')]]


def test_429_then_success(fake):
    fake.fail(429)
    vectors = google(fake).embed_documents(['x', 'y'])
    assert vectors.shape == (2, 768)
    assert len(fake.embed_requests) == 2  # The first answer was a 429.


@pytest.mark.parametrize('status, error', [
    (429, EmbeddingQuotaError), (408, EmbeddingTimeoutError)])
def test_retried_statuses_exhausted(fake, status, error):
    fake.fail(status, times=3)
    with pytest.raises(error, match='3 attempts'):
        google(fake).embed_documents(['x'])
    assert len(fake.embed_requests) == 3


def test_5xx_until_retries_are_exhausted(fake):
    fake.fail(503, times=3)
    with pytest.raises(EmbeddingError, match='server error after 3 '
                                             'attempts.*503'):
        google(fake).embed_documents(['x'])
    assert len(fake.embed_requests) == 3
    fake.fail(501)                     # Not a status worth retrying.
    with pytest.raises(EmbeddingError, match=r'server error \(not '
                                             r'retried\).*501'):
        google(fake).embed_documents(['x'])
    assert len(fake.embed_requests) == 4


def test_timeouts(fake):
    fake.delay = 1.0
    start = time.time()
    with pytest.raises(EmbeddingTimeoutError, match='did not answer'):
        google(fake, timeout=0.2, retries=1).embed_documents(['x'])
    assert time.time() - start < 3
    assert len(fake.embed_requests) == 2
    fake.delay = 0.0
    fake.stall(1.0)  # The first answer is late; the retry succeeds.
    assert google(fake, timeout=0.3, retries=2).embed_documents(
        ['x']).shape == (1, 768)


def test_bad_key_unknown_model_and_no_key(fake, monkeypatch):
    with pytest.raises(EmbeddingAuthError, match='rejected the credentials'):
        google(fake, api_key='wrong').embed_documents(['x'])
    with pytest.raises(EmbeddingModelError, match='was not found'):
        google(fake, model='text-embedding-004').embed_documents(['x'])
    for name in ('GOOGLE_API_KEY', 'GEMINI_API_KEY',
                 'GOOGLE_GENAI_USE_VERTEXAI'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(EmbeddingAuthError, match='GOOGLE_API_KEY'):
        google(fake, api_key=None)


def test_key_from_the_environment(fake, monkeypatch):
    monkeypatch.delenv('GOOGLE_API_KEY', raising=False)
    monkeypatch.setenv('GEMINI_API_KEY', 'test-key')
    google(fake, api_key=None).embed_documents(['x'])
    assert fake.embed_requests[-1]['key'] == 'test-key'


def test_one_vector_per_input_is_checked(fake):
    fake.drop = 1
    with pytest.raises(EmbeddingError, match='1 embeddings for 2 texts'):
        google(fake).embed_documents(['a', 'b'])


@pytest.mark.parametrize('body, error, message', [
    ('{"embeddings": [{"values": [0.5, 0.5]}, {"values": [0.5, 0.5]}]}',
     EmbeddingModelError, '2-d vectors .* expected 768'),
    ('{"embeddings": [{"values": []}, {}]}', EmbeddingModelError,
     '0-d vectors'),
    ('<html>proxy error</html>', EmbeddingError, 'no usable answer'),
])
def test_malformed_answers_raise_embedding_errors(fake, body, error,
                                                  message):
    fake.answer(body)
    with pytest.raises(error, match=message):
        google(fake).embed_documents(['a', 'b'])


def test_dropped_connections_are_retried(fake):
    fake.hang_up(times=2)
    vectors = google(fake).embed_documents(['a'])      # 3 attempts
    assert len(fake.embed_requests) == 3
    assert np.allclose(vectors[0], google(fake).embed_documents(['a'])[0])
    fake.hang_up(times=3)
    with pytest.raises(EmbeddingError, match='dropped before it answered, '
                                             '3 attempts'):
        google(fake).embed_documents(['a'])


def test_first_failure_stops_the_requests_not_yet_sent(fake):
    fake.fail(403, delay=0.1)
    fake.delay = 0.05
    with pytest.raises(EmbeddingAuthError):
        google(fake, batch_size=1, concurrency=2).embed_documents(
            ['t%d' % i for i in range(100)])
    time.sleep(0.3)          # Whatever was in flight has arrived.
    # A few were sent while the first failed; not the other ~95 batches.
    assert len(fake.embed_requests) < 20


def test_a_failure_stops_the_call_while_another_request_retries(fake):
    # The first answer is a 400 (after 0.3 s); the other request in flight
    # meets 429s and retries. The error comes at once (the results were
    # awaited in order), and no batch is sent after it.
    fake.fail(400, delay=0.3)
    fake.fail(429, times=20)
    start = time.time()
    with pytest.raises(EmbeddingModelError, match='rejected the request'):
        google(fake, batch_size=1, concurrency=2, retries=4,
               initial_delay=0.2, max_delay=0.4).embed_documents(
                   ['a', 'b', 'c', 'd'])
    assert time.time() - start < 1.0
    time.sleep(2.5)          # The request in flight ends its retries.
    assert set(item['content']['parts'][0]['text']
               for entry in fake.embed_requests
               for item in entry['requests']) == {'a', 'b'}


def test_concurrency_is_bounded(fake):
    fake.delay = 0.15
    google(fake, batch_size=10, concurrency=3).embed_documents(
        ['t%d' % i for i in range(100)])
    assert len(fake.embed_requests) == 10
    assert 2 <= fake.max_in_flight <= 3


def test_bad_arguments(fake):
    for batch_size in (101, 50.5, True):
        with pytest.raises(ValueError, match='batch_size must be an '
                                             'integer'):
            google(fake, batch_size=batch_size)
    with pytest.raises(ValueError, match='timeout must be a number'):
        google(fake, timeout=None)
    assert google(fake).embed_queries([]).shape == (0, 768)
    assert FunctionEmbedder(lambda t: [[1.0, 0.0]] * len(t), dimensions=2,
                            model='x').embed_queries([]).shape == (0, 2)
    with pytest.raises(ValueError, match='dimensions'):
        google(fake, dimensions=4000)
    with pytest.raises(ValueError, match='dimensions'):
        google(fake, dimensions=None)
    with pytest.raises(TypeError, match='list of texts'):
        google(fake).embed_documents('one string')


def test_function_embedder_adapts_any_callable():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return [[len(t), 1.0] for t in texts]

    embedder = FunctionEmbedder(encode, dimensions=2, model='lengths')
    vectors = embedder.embed_documents(['ab', 'abcd'])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1)
    assert embedder.fingerprint['model'] == 'lengths'
    assert embedder.cache_key('x') != embedder.cache_key('x', 'QUERY')
    # Titles come first, on their own line; queries have none.
    embedder.embed_documents(['ab', 'cd'], titles=['T', None])
    embedder.embed_query('q')
    assert calls[-2:] == [['T\nab', 'cd'], ['q']]
    assert embedder.cache_key('ab', title='T') == \
        embedder.cache_key('T\nab') != embedder.cache_key('ab')
    bad = FunctionEmbedder(lambda texts: [[1.0, 2.0]], dimensions=2,
                           model='one')
    with pytest.raises(EmbeddingError, match='1 vectors for 2 texts'):
        bad.embed_documents(['a', 'b'])


class Encoder(object):
    def encode(self, texts):
        return [[1.0, 0.0] for _ in texts]


def module_level_encoder(texts):
    return [[1.0, 0.0] for _ in texts]


def test_cache_key_follows_the_whole_fingerprint():
    class Versioned(FunctionEmbedder):
        version = '1.0'

        @property
        def fingerprint(self):
            fingerprint = super(Versioned, self).fingerprint
            fingerprint['version'] = self.version
            return fingerprint

    embedder = Versioned(module_level_encoder, 2)
    before = embedder.cache_key('x')
    embedder.version = '1.1'        # An upgraded model re-embeds.
    assert embedder.cache_key('x') != before
    # Without further parts, keys are those of earlier releases (caches
    # stay valid across an upgrade of this library).
    plain = FunctionEmbedder(module_level_encoder, 2, model='m')
    assert plain.cache_key('x') == hashlib.sha256(json.dumps(
        ['function', 'm', 2, 'RETRIEVAL_DOCUMENT', None, 'x']).encode()
    ).hexdigest()


def test_function_embedder_names_its_model():
    # Two lambdas, or the encode() of two model objects, must not share
    # cached vectors: they need a name.
    for function in (lambda texts: texts, Encoder().encode, Encoder.encode):
        with pytest.raises(ValueError, match='needs model='):
            FunctionEmbedder(function, dimensions=2)
    assert FunctionEmbedder(module_level_encoder, 2).model == \
        'test_embeddings.module_level_encoder'
    assert FunctionEmbedder(Encoder().encode, 2, model='a').cache_key('x') \
        != FunctionEmbedder(Encoder().encode, 2, model='b').cache_key('x')


def test_vertex_ai_without_credentials(monkeypatch, tmp_path):
    for name in ('GOOGLE_API_KEY', 'GEMINI_API_KEY',
                 'GOOGLE_APPLICATION_CREDENTIALS'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('GOOGLE_GENAI_USE_VERTEXAI', 'true')
    monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', 'my-project')
    monkeypatch.setenv('GOOGLE_CLOUD_LOCATION', 'us-central1')
    monkeypatch.setenv('CLOUDSDK_CONFIG', str(tmp_path))  # No gcloud login.
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('NO_GCE_CHECK', 'True')    # No metadata server.
    # The SDK looks for credentials before it sends anything (a custom
    # base_url would skip that, so the default endpoint is kept).
    embedder = GoogleEmbedder(retries=0, timeout=5)
    with pytest.raises(EmbeddingAuthError, match='application-default'):
        embedder.embed_query('x')


def test_enterprise_setting_decides_as_in_the_sdk(fake, monkeypatch):
    monkeypatch.setenv('GOOGLE_GENAI_USE_VERTEXAI', 'true')
    monkeypatch.setenv('GOOGLE_GENAI_USE_ENTERPRISE', 'false')
    assert google(fake).api_version == 'v1beta'
    monkeypatch.setenv('GOOGLE_GENAI_USE_VERTEXAI', 'false')
    monkeypatch.setenv('GOOGLE_GENAI_USE_ENTERPRISE', 'true')
    monkeypatch.setenv('GOOGLE_API_KEY', 'test-key')
    assert google(fake, api_key=None).api_version == 'v1beta1'


def test_vertex_ai_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv('GOOGLE_GENAI_USE_VERTEXAI', 'true')
    monkeypatch.setenv('GOOGLE_API_KEY', 'test-key')   # Vertex express mode
    monkeypatch.delenv('GEMINI_API_KEY', raising=False)
    embedder = google(fake, api_key=None)
    assert embedder.api_version == 'v1beta1'
    vectors = embedder.embed_documents(['a', 'b'], titles=['T', 'T'])
    query = embedder.embed_query('a?', task='QUESTION_ANSWERING')
    assert vectors.shape == (2, 768) and query.shape == (768,)
    batch, single = fake.log
    assert batch['path'] == ('/v1beta1/publishers/google/models/'
                             'gemini-embedding-001:batchEmbedContents')
    assert batch['body']['requests'][0]['embedContentConfig'] == {
        'taskType': 'RETRIEVAL_DOCUMENT', 'title': 'T',
        'outputDimensionality': 768}
    assert single['path'].endswith(':embedContent')
    assert single['body']['embedContentConfig']['taskType'] == \
        'QUESTION_ANSWERING'
    expected = fake_vector('a?', 'QUESTION_ANSWERING')[:768]
    np.testing.assert_allclose(query, expected / np.linalg.norm(expected),
                               rtol=1e-5, atol=1e-6)
