"""The LightningModule that trains any classifier with any configured optimizer."""

from optstudy.module.classifier import ImageClassifier
from optstudy.module.layout import input_memory_format

__all__ = ["ImageClassifier", "input_memory_format"]
