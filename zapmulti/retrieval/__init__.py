"""Similar-shoe search: embeddings, the faiss index folder, filtered search, retrieval metrics.

Typical use::

    from zapmulti import retrieval

    index = retrieval.build_index("runs/zappos", "indexes/zappos")       # embed and save
    hits = retrieval.search(index, ["query.jpg"], k=10, where=["Category=Boots"])
    report = retrieval.evaluate_index(index, labels=["Category"])
"""

# ruff: noqa: E402 - the faiss logger is quietened before the modules below import faiss
import logging

# faiss logs which CPU build it loads at INFO; that is noise in the middle of a command's output.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

from zapmulti.retrieval.build import add_to_index, build_index, embed_catalogue
from zapmulti.retrieval.embeddings import embed_array, embed_files, resolve_embedding
from zapmulti.retrieval.grid import save_grid
from zapmulti.retrieval.index import (
    IndexDirError,
    SimilarityIndex,
    create_faiss_index,
    load_index,
    plan_factory,
)
from zapmulti.retrieval.metrics import (
    accuracy_metrics,
    evaluate_index,
    evaluation_table,
    held_out_queries,
    label_agreement,
    recall_at_k,
)
from zapmulti.retrieval.search import exact_search, parse_where, search, search_vectors

__all__ = [
    "IndexDirError",
    "SimilarityIndex",
    "accuracy_metrics",
    "add_to_index",
    "build_index",
    "create_faiss_index",
    "embed_array",
    "embed_catalogue",
    "embed_files",
    "evaluate_index",
    "evaluation_table",
    "exact_search",
    "held_out_queries",
    "label_agreement",
    "load_index",
    "parse_where",
    "plan_factory",
    "recall_at_k",
    "resolve_embedding",
    "save_grid",
    "search",
    "search_vectors",
]
