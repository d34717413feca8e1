"""The predictive twin: profile a pipeline from run folders, simulate configurations not yet run, and
recommend the cheapest one that meets a latency bound (``testbed.profile``, ``testbed.predict``,
``testbed.advise``)."""
