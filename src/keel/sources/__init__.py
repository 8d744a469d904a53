"""Sources: where records come from before they are admitted (files today: CSV, JSONL,
Parquet, compressed or not). A source yields raw rows; it decides nothing."""

from keel.sources._files import printable, read_rows

__all__ = ["printable", "read_rows"]
