"""The stage harness: the loops that run stage A and stage B around the broker client and stamp every
clock (``loops``), the wire format of a message (``envelope``) and the binary records the stages send
the orchestrator (``records``)."""
