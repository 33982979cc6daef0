"""Photos from export to tensors: ingest, decoding, the manifest, shards, tasks and splits, and the training Dataset."""
