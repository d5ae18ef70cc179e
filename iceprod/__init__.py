"""iceprod: dataset/job/task workflow management with pilots."""

__version__ = "0.1.0"
