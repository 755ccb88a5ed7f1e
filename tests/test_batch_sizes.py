"""The drain's claim is a whole number of every source's read and write batches (no part-empty calls)."""

from __future__ import annotations

from connector import writeback
from connector.sources import hubspot, hubspot_writes, salesforce, salesforce_soql


def test_a_claim_fills_every_batch_it_is_split_into() -> None:
    for size in (salesforce_soql.IDS_PER_QUERY, salesforce.WRITE_BATCH, hubspot.BATCH, hubspot_writes.BATCH):
        assert writeback.CLAIM % size == 0, size

