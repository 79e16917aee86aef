"""Reports: results/<study>/ files -> reports/<study>.md and reports/index.html."""
