"""Analysis: from the stages' records to numbers (``metrics``), the run folder's files (``report``) and
the comparison of many runs (``compare``)."""
