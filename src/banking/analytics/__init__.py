"""The analytics sink: the event stream as a partitioned Parquet dataset, exactly once per
event, and DuckDB over it (docs/analytics.md).

``rows`` (an event as a row of its dataset), ``dataset`` (files on ``pyarrow.fs``: layout,
names, atomic writes), ``sink`` (buffers, flushes, what is already written), ``consumer``
(`banking worker analytics`: commits after flushes), ``query`` (`banking analytics query`),
``reconcile`` (`banking analytics reconcile`).
"""
