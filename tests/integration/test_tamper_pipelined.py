"""The data-object cases of ``test_tamper.py`` again, with every reader handing work to its
helper threads from the first byte (``PIPELINE_AFTER = 0``; by default only objects larger
than 8 MiB do, and the tamper objects are a few KiB).

The threaded path must fail exactly as the single-threaded one: the same one-line message
naming the object and chunk, after exactly the authentic plaintext before the damage.
"""

from __future__ import annotations

import pytest

from drbackup.codec import pipeline
from tests.integration.test_tamper import (  # noqa: F401 - fixtures and tests collected here
    setup,
    storage,
    test_delete_a_data_object,
    test_drop_the_last_chunk_of_a_data_object,
    test_flip_any_byte_of_any_object,
    test_flip_in_a_compressed_object_never_yields_wrong_plaintext,
    test_flip_one_byte_in_each_region_of_each_data_object,
    test_swap_chunks_between_objects_of_two_backups,
    test_swap_two_segment_objects_within_one_item,
    test_swap_whole_objects_between_two_backups,
    test_truncate_a_data_object_mid_chunk,
    test_truncate_a_data_object_to_its_header,
    test_verify_lists_every_damaged_item,
)


@pytest.fixture(autouse=True)
def pipelined(monkeypatch):
    """Helpers from the first read; the test must have used them."""
    started = []

    class Prefetcher(pipeline._Prefetcher):
        def __init__(self, *args, **kwargs):
            started.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pipeline, "PIPELINE_AFTER", 0)
    monkeypatch.setattr(pipeline, "_Prefetcher", Prefetcher)
    yield
    assert started, "no reader used helper threads"
