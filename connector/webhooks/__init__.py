"""Webhook intake: CRMs tell us which records changed; we read those records ourselves."""
