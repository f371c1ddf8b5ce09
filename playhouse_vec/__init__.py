"""
playhouse_vec: vector search for Peewee models on SQLite, with sqlite-vec.

Public API::

    from playhouse_vec import VecModel, VectorField, FTSModel, SearchField
"""
from playhouse_vec.database import register_database
from playhouse_vec.database import vector_pragmas
from playhouse_vec.embeddings import Embedder
from playhouse_vec.embeddings import EmbeddingError
from playhouse_vec.embeddings import FunctionEmbedder
from playhouse_vec.embeddings import GoogleEmbedder
from playhouse_vec.embeddings import LocalEmbedder
from playhouse_vec.fields import VectorField
from playhouse_vec.fts import FTSModel
from playhouse_vec.fts import SearchField
from playhouse_vec.hybrid import hybrid_search
from playhouse_vec.models import VecModel
from playhouse_vec.query import KNNSelect
from playhouse_vec.schema import SchemaChanged

__version__ = '0.1.0'
__all__ = ['Embedder', 'EmbeddingError', 'FTSModel', 'FunctionEmbedder',
           'GoogleEmbedder', 'KNNSelect', 'LocalEmbedder', 'SchemaChanged',
           'SearchField', 'VecModel', 'VectorField', 'hybrid_search',
           'register_database', 'vector_pragmas']
