"""Pure analysis of finished runs: a run record -> a results row, summaries for the DVC files, statistics
over seeds and the sentences of "What the numbers say". Needs neither a tracker nor a dataset."""
