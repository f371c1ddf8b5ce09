"""
A fake Gemini API on 127.0.0.1 for the real google-genai SDK.

It serves ``POST /{version}/models/{model}:batchEmbedContents`` like the
Gemini Developer API, and the Vertex AI routes ``…/publishers/google/models/
{model}:embedContent`` and ``:batchEmbedContents`` (items carry an
``embedContentConfig`` and no model name): it checks the key header, the
100-request limit, the per-request model name, task types and titles;
answers with deterministic
vectors that are unit length at 3072 dimensions and truncated without
renormalising (like gemini-embedding-001); and can be told to fail, stall
drop vectors, or answer with a given body. Every request is logged.
"""
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import numpy as np

TASKS = {'TASK_TYPE_UNSPECIFIED', 'RETRIEVAL_QUERY', 'RETRIEVAL_DOCUMENT',
         'SEMANTIC_SIMILARITY', 'CLASSIFICATION', 'CLUSTERING',
         'QUESTION_ANSWERING', 'FACT_VERIFICATION', 'CODE_RETRIEVAL_QUERY'}
ROUTE = re.compile(r'^/(v1|v1beta)/models/([^/:]+):batchEmbedContents$')
VERTEX_ROUTE = re.compile(
    r'^/(v1|v1beta1)/(?:projects/[^/]+/locations/[^/]+/)?publishers/google/'
    r'models/([^/:]+):(embedContent|batchEmbedContents)$')


def fake_vector(text, task, dims=3072):
    """The vector the fake returns (before truncation), deterministic."""
    seed = hashlib.sha256(('%s|%s' % (task, text)).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], 'little'))
    vector = rng.normal(size=dims)
    return vector / np.linalg.norm(vector)


class FakeGemini(object):
    def __init__(self, api_key='test-key', models=('gemini-embedding-001',),
                 delay=0.0):
        self.api_key = api_key
        self.models = set(models)
        self.delay = delay
        self.log = []           # One dict per HTTP request received.
        self.failures = []      # Queued (status, reason, delay) answers.
        self.drop = 0           # Vectors to leave out of the next answer.
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_POST(self):
                fake._handle(self)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={'poll_interval': 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def fail(self, status, times=1, delay=0.0):
        """Answer the next ``times`` requests with an error ``status``."""
        for _ in range(times):
            self.failures.append((status, delay, None))

    def stall(self, delay, times=1):
        """Answer the next ``times`` requests normally, after ``delay``."""
        for _ in range(times):
            self.failures.append((None, delay, None))

    def hang_up(self, times=1):
        """Close the connection of the next ``times`` requests without an
        answer (a server or proxy dropping it)."""
        for _ in range(times):
            self.failures.append(('hang up', 0.0, None))

    def answer(self, body, times=1):
        """Answer the next ``times`` requests with ``body`` (text) and
        status 200, whatever they ask."""
        for _ in range(times):
            self.failures.append((200, 0.0, body))

    @property
    def embed_requests(self):
        return [entry for entry in self.log if entry.get('requests')]

    def _reply(self, handler, status, body):
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header('Content-Type', 'application/json')
        handler.send_header('Content-Length', str(len(data)))
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client gave up (a timeout test).

    def _error(self, handler, status, message, reason):
        self._reply(handler, status, {'error': {
            'code': status, 'message': message, 'status': reason}})

    def _handle(self, handler):
        length = int(handler.headers.get('Content-Length') or 0)
        body = json.loads(handler.rfile.read(length) or b'{}')
        path = handler.path.split('?')[0]
        match = ROUTE.match(path) or VERTEX_ROUTE.match(path)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.log.append({'path': handler.path, 'time': time.time(),
                             'key': handler.headers.get('x-goog-api-key'),
                             'requests': body.get('requests'),
                             'body': body})
            failure = self.failures.pop(0) if self.failures else None
        try:
            time.sleep(failure[1] if failure else self.delay)
            self._answer(handler, match, body, failure)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, handler, match, body, failure):
        if failure is not None and failure[0] == 'hang up':
            handler.close_connection = True
            return
        if failure is not None and failure[2] is not None:
            data = failure[2].encode()
            handler.send_response(failure[0])
            handler.send_header('Content-Type', 'application/json')
            handler.send_header('Content-Length', str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if failure is not None and failure[0] is not None:
            status = failure[0]
            reason = {429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL',
                      503: 'UNAVAILABLE'}.get(status, 'UNKNOWN')
            return self._error(handler, status, 'Injected failure.', reason)
        if match is None:
            return self._error(handler, 404, 'Not found.', 'NOT_FOUND')
        version, model = match.groups()[:2]
        vertex = match.re is VERTEX_ROUTE
        single = vertex and match.group(3) == 'embedContent'
        if handler.headers.get('x-goog-api-key') != self.api_key:
            return self._error(handler, 400, 'API key not valid. Please '
                               'pass a valid API key.', 'INVALID_ARGUMENT')
        if model not in self.models:
            return self._error(handler, 404, 'models/%s is not found for '
                               'API version %s' % (model, version),
                               'NOT_FOUND')
        requests = [body] if single else (body.get('requests') or [])
        if len(requests) > 100:
            return self._error(handler, 400, '* BatchEmbedContentsRequest.'
                               'requests: at most 100 requests can be in one '
                               'batch\n', 'INVALID_ARGUMENT')
        vectors = []
        for item in requests:
            config = item.get('embedContentConfig', {}) if vertex else item
            task = config.get('taskType', 'TASK_TYPE_UNSPECIFIED')
            dims = config.get('outputDimensionality', 3072)
            model_ok = 'model' not in item if vertex else \
                item.get('model') == 'models/%s' % model
            if not model_ok or task not in TASKS or not 1 <= dims <= 3072 \
                    or ('title' in config and task != 'RETRIEVAL_DOCUMENT'):
                return self._error(handler, 400, 'Invalid request item: %s'
                                   % json.dumps(item)[:200],
                                   'INVALID_ARGUMENT')
            text = ''.join(p.get('text', '') for p in
                           item['content']['parts'])
            vectors.append(fake_vector(text, task)[:dims].tolist())
        if single:
            return self._reply(handler, 200,
                               {'embedding': {'values': vectors[0]}})
        if self.drop:
            vectors, self.drop = vectors[self.drop:], 0
        self._reply(handler, 200, {'embeddings': [{'values': v}
                                                  for v in vectors]})
