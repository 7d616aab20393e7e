"""SQLite schema for Chainlit 2.x's ``SQLAlchemyDataLayer`` (checked against 2.12.0).

Chainlit never creates these tables. The columns are the ones the data layer reads
and writes: ``users`` (``get_user``/``create_user``), ``threads`` (``update_thread``,
``get_all_user_threads``), ``steps`` (every key of ``Step.to_dict``/``Message.to_dict``
that ``create_step`` inserts, plus the ones the thread query selects), ``elements``
(``create_element`` and the thread query, which selects ``props``) and ``feedbacks``
(``upsert_feedback``). Identifiers are quoted because they are camelCase.

SQLite has no UUID, JSONB or array types: ids are TEXT, JSON is TEXT (the data layer
``json.dumps`` metadata itself), booleans are stored as 0/1 and come back as ints.
``autoCollapse`` is not in Chainlit's published DDL but ``Step.to_dict`` emits it for
the ``on_message`` run step, so without it that step fails to persist.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

DDL = """
CREATE TABLE IF NOT EXISTS users (
    "id" TEXT PRIMARY KEY,
    "identifier" TEXT NOT NULL UNIQUE,
    "metadata" TEXT NOT NULL,
    "createdAt" TEXT
);

CREATE TABLE IF NOT EXISTS threads (
    "id" TEXT PRIMARY KEY,
    "createdAt" TEXT,
    "name" TEXT,
    "userId" TEXT,
    "userIdentifier" TEXT,
    "tags" TEXT,
    "metadata" TEXT,
    FOREIGN KEY ("userId") REFERENCES users ("id") ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS steps (
    "id" TEXT PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "parentId" TEXT,
    "streaming" BOOLEAN NOT NULL,
    "waitForAnswer" BOOLEAN,
    "isError" BOOLEAN,
    "metadata" TEXT,
    "tags" TEXT,
    "input" TEXT,
    "output" TEXT,
    "createdAt" TEXT,
    "command" TEXT,
    "modes" TEXT,
    "start" TEXT,
    "end" TEXT,
    "generation" TEXT,
    "showInput" TEXT,
    "language" TEXT,
    "indent" INTEGER,
    "defaultOpen" BOOLEAN,
    "autoCollapse" BOOLEAN,
    FOREIGN KEY ("threadId") REFERENCES threads ("id") ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS elements (
    "id" TEXT PRIMARY KEY,
    "threadId" TEXT,
    "type" TEXT,
    "url" TEXT,
    "chainlitKey" TEXT,
    "name" TEXT NOT NULL,
    "display" TEXT,
    "objectKey" TEXT,
    "size" TEXT,
    "page" INTEGER,
    "language" TEXT,
    "forId" TEXT,
    "mime" TEXT,
    "props" TEXT,
    "autoPlay" BOOLEAN,
    "playerConfig" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads ("id") ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS feedbacks (
    "id" TEXT PRIMARY KEY,
    "forId" TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "value" INTEGER NOT NULL,
    "comment" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads ("id") ON DELETE CASCADE
);
"""

TABLES = ("users", "threads", "steps", "elements", "feedbacks")


def create_schema(path: str | Path) -> Path:
    """Create the data layer's tables in the SQLite file at ``path`` (idempotent)."""
    db_path = Path(path)
    conn = sqlite3.connect(db_path)
    try:
        # WAL lets the server's readers and its one writer overlap; the mode sticks to the file.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(DDL)
        conn.commit()
    finally:
        conn.close()
    return db_path
