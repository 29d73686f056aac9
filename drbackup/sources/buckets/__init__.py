"""Bucket sources: S3-compatible servers read and written with the ``minio`` client.

``client`` (the one error translation), ``listing`` (sorted merge-join, prefixes),
``index`` (snapshot index lines), ``pool`` (bounded ordered transfers), ``restore``
(verified uploads).  Nothing here knows about storage backends or encryption.
"""
