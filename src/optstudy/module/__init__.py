"""The LightningModule that trains any classifier with any configured optimizer."""

from optstudy.module.classifier import ImageClassifier

__all__ = ["ImageClassifier"]
