"""
Code search with Gemini embeddings: code snippets are embedded as
RETRIEVAL_DOCUMENT, questions as CODE_RETRIEVAL_QUERY.

Needs a Gemini API key in GOOGLE_API_KEY or GEMINI_API_KEY and
``pip install '.[google]'``; without a key it says so and exits.

    python examples/code_search.py
"""
import os
import sys

from peewee import Model
from peewee import SqliteDatabase
from peewee import TextField

from playhouse_vec import VecModel
from playhouse_vec import VectorField


SNIPPETS = [
    ('sort_numbers', 'def sort_numbers(xs):\n    return sorted(xs)'),
    ('read_json', 'def read_json(path):\n    with open(path) as fh:\n'
                  '        return json.load(fh)'),
    ('fetch_url', 'def fetch_url(url):\n    return urllib.request.urlopen('
                  'url).read()'),
    ('word_count', 'def word_count(text):\n    return collections.Counter('
                   'text.split())'),
]


def main():
    if not (os.environ.get('GOOGLE_API_KEY') or
            os.environ.get('GEMINI_API_KEY')):
        print('Set GOOGLE_API_KEY or GEMINI_API_KEY to run this example '
              '(it calls the Gemini API); skipping.')
        return 0
    from playhouse_vec import GoogleEmbedder

    db = SqliteDatabase(':memory:')

    class Snippet(Model):
        name = TextField()
        code = TextField()

        class Meta:
            database = db

    class SnippetVec(VecModel):
        embedding = VectorField(768, metric='cosine')

        class Meta:
            database = db
            content = Snippet
            embedder = GoogleEmbedder(model='gemini-embedding-001',
                                      dimensions=768)
            embed = 'code'
            embed_title = 'name'

    db.create_tables([Snippet, SnippetVec])
    for name, code in SNIPPETS:
        Snippet.create(name=name, code=code)
    print(SnippetVec.index())
    for question in ('function that sorts a list', 'load a JSON file',
                     'download a web page'):
        best = SnippetVec.search(question, k=1,
                                 task='CODE_RETRIEVAL_QUERY').get()
        print('%-28s -> %s' % (question, Snippet.get_by_id(best.rowid).name))
    return 0


if __name__ == '__main__':
    sys.exit(main())
