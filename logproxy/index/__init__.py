"""The capture index: an SQLite file beside the captures that the query API reads.

``<log_dir>/.logproxy-index.sqlite3`` (WAL mode) holds one row per capture -- what the
list filters on and shows, both metadata documents, and the start of the bodies for
text search (FTS5, or ``LIKE`` where SQLite lacks it). It is a cache of the files:
``logproxy reindex`` rebuilds it from them, and a starting service brings it up to date
(:mod:`logproxy.index.reconcile`).

Modules: :mod:`~logproxy.index.schema` (the file), :mod:`~logproxy.index.rows` (a row
from two documents), :mod:`~logproxy.index.store` (writes),
:mod:`~logproxy.index.updater` (the writer-thread listener),
:mod:`~logproxy.index.query` (listing and lookups), :mod:`~logproxy.index.events` (live
events), :mod:`~logproxy.index.runtime` (threads and life cycle in a service).
"""
