"""Reports: running the notebooks with papermill and each notebook's one-call setup (`notebooks`), the paper's
numbers and the sentence comparing a run with them (`paper`), what a run was and reading run folders back
(`runs`), tables as DataFrames (`tables`), figures that depend on what a run is (`figures`), and what produced a
result (`provenance`)."""
