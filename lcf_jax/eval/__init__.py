"""Evaluation: SQuAD-style EM/F1, multiple-choice accuracy, message size."""
