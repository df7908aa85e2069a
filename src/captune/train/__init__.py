"""Training stage: batches with correct label masks, and the LoRA training loop."""
