"""Evaluation of trained models (codec: openmrt/eval/codec.py)."""
