"""Analysis: from the stages' records to numbers (``metrics``), the run folder's files (``report``) and
the comparison of many runs (``compare``: run folders read and grouped in ``groups``, drawn by ``plots``,
one page by ``html``)."""
