"""Service engines, one process each: cmap, cpg, quorum/votequorum, cfg, SAM (``services/<name>/``)."""
