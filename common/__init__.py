"""Shared utilities with no knowledge of LLMs or LoadGen: the one error type for input a user can
fix (errors), atomic writes (files), an order-keeping parallel map (parallel), reading a data
table from a pickle without running code from it, parquet or JSON lines (tables), secrets kept
out of anything shown or stored (redact).

May import: the standard library only (tables imports pandas/pyarrow when it reads a file).
Everything else may import this package.
"""
