"""What goes into a run: where models live (models), their tokenizers (tokenizer), exact fast
tokenizing for processorca (fast_tokenize), the shipped demo data set (demo) and synthetic data
sets (synthetic).

May import: common.
"""
