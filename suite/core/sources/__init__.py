"""Image sources: embedded defaults and loaders for datasets on local disk."""

from suite.core.sources.base import ImageSource, ImageSplit

__all__ = ["ImageSource", "ImageSplit"]
