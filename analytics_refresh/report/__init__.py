"""The freshness report: how well each key's promise was kept, per day, as HTML or JSON."""
