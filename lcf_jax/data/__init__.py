"""Data: split rules, raw-file readers, TFDS builders and the tokenisation pipeline."""
