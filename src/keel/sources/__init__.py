"""Sources: where records come from before they are admitted (files today: CSV, JSONL,
Parquet, compressed or not). A source yields raw rows; it decides nothing. CSV and Parquet
files are also read as Arrow record batches, for work done per column."""

from keel.sources._columnar import ColumnarReadError, Columns, columns_readable, read_columns
from keel.sources._files import printable, read_rows

__all__ = ["ColumnarReadError", "Columns", "columns_readable", "printable", "read_columns",
           "read_rows"]
