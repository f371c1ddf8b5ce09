"""
The effect of PRAGMAs on search and ingest: SQLite's defaults (4 KiB pages,
2 MB cache) vs a 64 MB cache vs ``vector_pragmas()`` (64 KiB pages, 64 MB
cache, WAL, synchronous=normal), each on a freshly built file.

    python benchmarks/pragmas.py [--n 100000] [--dims 768]

Prints, per PRAGMA set, the p50 search latency of an exact float search and
of inverted lists (``ivf``, k=10, in a separate process), the ingest rate of
documents into content + FTS5 + vec0, and ratios against SQLite's defaults.
"""
import argparse

from ingest import ingest
from quantization import PRAGMAS
from quantization import run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=100000)
    parser.add_argument('--dims', type=int, default=768)
    parser.add_argument('--queries', type=int, default=30)
    args = parser.parse_args()
    table = {}
    for name in ('default', 'cache', 'tuned'):
        print('PRAGMAs %s:' % name)
        results = run(args.n, args.dims, args.queries, ['float', 'ivf'],
                      name)
        searches = dict((label, r['p50']) for label, r in results.items())
        table[name] = searches, ingest(args.n, args.dims, name, batch=1000)
    base_search, base_ingest = table['default']
    print('\nvs SQLite defaults (lower latency / higher ingest is better):')
    for name in PRAGMAS:
        searches, rate = table[name]
        print('  %-8s %s  ingest %.2fx' % (name, '  '.join(
            '%s %.2fx' % (label, searches[label] / base_search[label])
            for label in sorted(searches)), rate / base_ingest))


if __name__ == '__main__':
    main()
