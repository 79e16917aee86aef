"""Training: the LightningModule, the Trainer factory and the single-run composition root."""
