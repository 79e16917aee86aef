"""Pure analysis: MLflow runs -> tables, statistics and findings."""
