"""Shared utilities with no knowledge of LLMs or LoadGen: the one error type for input a user can
fix (errors), atomic writes (files), an order-keeping parallel map (parallel).

May import: the standard library only. Everything else may import this package.
"""
