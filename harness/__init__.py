"""Shared pieces of the harness: errors, model and tokenizer resolution, the SUT core."""
