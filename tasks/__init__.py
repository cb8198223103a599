"""Accuracy tasks beyond the MLPerf OpenOrca run, for quantization studies.

- perplexity: llama.cpp's chunked perplexity (or a Hugging Face style sliding window) of a text file.
- multiple_choice: MMLU-style questions scored by answer log-likelihood (MMLU CSV/parquet and
  llama.cpp's multiple-choice files).
- summarization: greedy summaries of documents, documents per second and ROUGE.

Every task works through the Backend interface (score() for the first two, generate() for the
third), runs from one command (`python -m tasks TASK ...`) and writes a results.json.

May import: common, inputs, accuracy, backends, harness (results files).
"""
