"""Generation stage: named decoding systems and a batched captioner that reads the feature store."""
