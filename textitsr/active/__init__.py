"""ANNEAL active learning: pick informative item pairs, log the analyst's labels, fine-tune the metric.

`anneal` selects (MGUE / BCGUE uncertainty + clustering diversity), `annotations` persists the
labels, `oracle` simulates an analyst from ground-truth change types, `finetune` turns labels into
a new checkpoint, and `rounds` ties them to an archive store for the CLI and the Annotate page.
"""
