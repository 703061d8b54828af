"""clinical-mlops: governed clinical risk models from raw EHR data to bedside use.

The library is the product; the ``clinical-mlops`` command, the HTTP service and
the review console are thin shells over the functions exported here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
