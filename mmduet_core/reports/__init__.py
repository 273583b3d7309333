"""Reports: running the notebooks with papermill and rendering them (`notebooks`), the paper's numbers
(`paper`), and what produced a result (`provenance`)."""
