"""The bad-input catalogue (issue #8): every item, the error it must give, and the proof that
nothing changed. Each test fails if the message or the no-side-effect guarantee regresses.

Config (test_config.py; the finer validation points in tests/test_config.py)
    missing file, bad YAML, unknown keys, wrong types, missing secrets, two shops with one
    name: ``robot run`` exits 2 with the exact lines naming file, shop and field; every table
    and every file as it was. SKU mapped to a missing pool: ``robot config check`` exits 2
    naming it and the fix; the robot logs it at start (its orders wait with the reason).

Imports (test_imports.py)
    wrong encoding (GBK, UTF-16, no encoding), BOM, CRLF, huge lines (bounded memory), binary
    files, empty files, duplicates (in the file, against the pool, the same file twice), bad
    dates, a file truncated mid-line or mid-character: every bad line by number and reason, or
    the whole file refused; a refused import leaves every table as it was.

Webhooks (test_webhooks.py)
    bad or missing signatures, stale or future timestamps, oversized bodies (declared or
    streamed), invalid JSON, valid JSON of the wrong shape, unknown shop, another app's push:
    the right 4xx with the reason, nothing written; hypothesis-generated bodies never give a
    500 or a partial write.

Platforms answering in unexpected shapes (test_platform_shapes.py)
    missing fields, nulls, huge numbers as strings in one order: it is parked ``held`` with the
    reason, the rest of the poll ships, the shop goes on; an HTML error page or truncated JSON
    for a whole answer: the poll fails as retriable, nothing written, nothing lost.

The database (test_database.py)
    unavailable at start (the robot waits, saying why; SIGTERM ends the wait cleanly),
    unavailable for a command (one line, password masked), lost mid-run (health and one log
    line, every order shipped once when it returns), the disk full on SQLite (the import adds
    nothing, the robot writes no half order): no corruption, recovery when the resource returns.
"""
